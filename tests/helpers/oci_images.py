"""Real container images for tests: tar layers made from members, pushed to a registry.

``layer(members)`` writes a tar layer (gzip-compressed by default) the way image builders
do; ``push_image`` uploads layers, an image config and a manifest with OCI or Docker v2
media types through pyro's own registry client; ``push_index`` a multi-arch index.
``host_tools_layer`` is a base layer with a shell and a few coreutils copied from this
(Debian 12) host, with the libraries they load, so a test image can run commands.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyro.environments.cache.store import Cache, Install
from pyro.oci.client import RegistryClient
from pyro.oci.reference import parse_oci_ref

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TOOLS = ("dash", "stat", "id", "cat", "ls", "env", "pwd", "readlink")
TASK_TOOLS = ("mkdir", "touch", "rm", "sync", "ln")
"""What a task's own housekeeping runs in the guest (docs/environments.md)."""


@dataclass
class Member:
    """One tar member: ``kind`` is file, dir, symlink, hardlink, char or fifo."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    kind: str = "file"
    link: str = ""
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[str, str] = field(default_factory=dict)


def _tarinfo(member: Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.path)
    info.mode, info.uid, info.gid, info.mtime = member.mode, member.uid, member.gid, 1_700_000_000
    info.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "char": tarfile.CHRTYPE,
        "fifo": tarfile.FIFOTYPE,
    }[member.kind]
    info.linkname = member.link
    info.devmajor, info.devminor = member.rdev
    info.size = len(member.data) if member.kind == "file" else 0
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in member.xattrs.items()}
    return info


def tar_bytes(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            data = io.BytesIO(member.data) if member.kind == "file" else None
            archive.addfile(_tarinfo(member), data)
    return out.getvalue()


@dataclass(frozen=True)
class Layer:
    blob: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()


def layer(members: list[Member] | bytes, *, compress: bool = True) -> Layer:
    """A layer from members (or ready tar bytes), gzip-compressed unless ``compress`` is off."""
    raw = members if isinstance(members, bytes) else tar_bytes(members)
    blob = gzip.compress(raw, mtime=0) if compress else raw
    return Layer(blob, "sha256:" + hashlib.sha256(raw).hexdigest())


def host_tools_layer() -> Layer:
    """A base layer: merged-usr symlinks, dash as /bin/sh, a few tools and their libraries."""
    files: dict[str, Path] = {}
    for tool in (*TOOLS, *TASK_TOOLS):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if not found:
            continue
        real = Path(os.path.realpath(found))
        files[str(real)] = real
        ldd = subprocess.run(["ldd", str(real)], capture_output=True, text=True).stdout
        for line in ldd.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                real_lib = Path(os.path.realpath(path))
                files[str(real_lib)] = real_lib
                files[path] = real_lib
    members = [
        Member("bin", kind="symlink", link="usr/bin", mode=0o777),
        Member("lib", kind="symlink", link="usr/lib", mode=0o777),
        Member("lib64", kind="symlink", link="usr/lib64", mode=0o777),
        Member("sbin", kind="symlink", link="usr/sbin", mode=0o777),
    ]
    dirs: set[str] = set()
    for name in sorted(files):
        rel = name.lstrip("/")
        for top in ("bin/", "lib/", "lib64/", "sbin/"):
            if rel.startswith(top):
                rel = "usr/" + rel
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in dirs:
                dirs.add(parent)
                members.append(Member(parent, kind="dir", mode=0o755))
        if any(m.path == rel for m in members):
            continue
        members.append(Member(rel, data=files[name].read_bytes(), mode=0o755))
    members.append(Member("usr/bin/sh", kind="symlink", link="dash", mode=0o777))
    return layer(members)


def image_config(layers: list[Layer], config: dict[str, Any], arch: str = "amd64") -> bytes:
    document = {
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [item.diff_id for item in layers]},
    }
    return json.dumps(document, sort_keys=True).encode()


def _push_blob(client: RegistryClient, data: bytes, work: Path) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = work / digest[7:]
    path.write_bytes(data)
    client.push_blob(path, digest, len(data))
    path.unlink()
    return digest, len(data)


def push_image(
    ref: str,
    layers: list[Layer],
    config: dict[str, Any],
    work: Path,
    *,
    docker: bool = False,
    arch: str = "amd64",
    config_bytes: bytes | None = None,
) -> tuple[str, int]:
    """Push an image to ``ref`` (oci://…); (manifest digest, manifest size)."""
    client = RegistryClient(parse_oci_ref(ref))
    work.mkdir(parents=True, exist_ok=True)
    descriptors = []
    for item in layers:
        digest, size = _push_blob(client, item.blob, work)
        media = DOCKER_LAYER if docker else OCI_LAYER_GZIP
        descriptors.append({"mediaType": media, "digest": digest, "size": size})
    raw_config = config_bytes if config_bytes is not None else image_config(layers, config, arch)
    config_digest, config_size = _push_blob(client, raw_config, work)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": config_digest,
            "size": config_size,
        },
        "layers": descriptors,
    }
    data = json.dumps(manifest).encode()
    tag = client.ref.tag or "latest"
    digest = client.put_manifest(data, tag, DOCKER_MANIFEST if docker else OCI_MANIFEST)
    return digest, len(data)


def push_index(ref: str, manifests: list[tuple[str, int, str]]) -> str:
    """Push an OCI index of (digest, size, architecture) linux manifests to ``ref``."""
    client = RegistryClient(parse_oci_ref(ref))
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"os": "linux", "architecture": arch},
            }
            for digest, size, arch in manifests
        ],
    }
    return client.put_manifest(json.dumps(document).encode(), client.ref.tag or "latest", OCI_INDEX)


def kernel_cache(root: Path, install: Install) -> Cache:
    """A cache at ``root`` whose ``debian:12`` holds a copy of ``install``'s kernel (and a
    placeholder rootfs): what a conversion needs, without linking the shared cache's files
    (a link would change their ctime and make that cache hash its 1 GiB rootfs again)."""
    staged = root / "staged-kernel"
    staged.mkdir(parents=True)
    shutil.copyfile(install.kernel, staged / "vmlinux")
    (staged / "rootfs.ext4").write_bytes(b"placeholder: image environments use the kernel only")
    cache = Cache(root / "cache")
    cache.install("debian:12", staged, {"name": "debian:12", "version": install.version})
    return cache
