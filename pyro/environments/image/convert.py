"""Turn a container image into a pyro environment: a catalog kernel plus the image as ext4.

The image's layers are fetched (digest-checked, bounded) and applied in order
(:mod:`.layers`), each layer's uncompressed digest checked against the config's
``rootfs.diff_ids``; the tree gets the folders the agent mounts on, and the image config's
``Env``, ``WorkingDir`` and ``User`` are written to :data:`DEFAULTS_FILE`, which the agent
reads at boot (docs/agent-protocol.md). The kernel is the catalog's (:data:`KERNEL_FROM`):
the agent is PID 1 from its own initramfs, so the image needs no init, shell or libc.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from pyro.environments.image.ext4 import write_ext4
from pyro.environments.image.files import add_files
from pyro.environments.image.layers import Entry, Readable, Tree, apply_layer, layer_error
from pyro.errors import BuildError, PyroError, RegistryError
from pyro.spec.model import FileCopy
from pyro.spec.ref import OciRef

KERNEL_FROM = "debian:12"
"""The catalog environment whose kernel image environments boot."""
DEFAULTS_FILE = "etc/pyro-image.conf"
MOUNT_POINTS = ("dev", "proc", "sys", "tmp", "run", "workspace", "etc")
MAX_ENV = 1024
KERNEL_FILE = "vmlinux"
ROOTFS_FILE = "rootfs.ext4"

Log = Callable[[str], None]
ByteProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ImageDefaults:
    """What the image config asks of every command: environment, folder, user, command."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    uid: int = 0
    gid: int = 0
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": list(self.env),
            "workingDir": self.working_dir,
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
        }


@dataclass(frozen=True)
class ConvertedImage:
    """What :func:`convert_image` wrote to ``out_dir`` and what went into it."""

    digest: str
    manifest_digest: str
    defaults: ImageDefaults
    metadata: dict[str, Any]


def convert_image(
    ref: OciRef,
    out_dir: Path,
    work: Path,
    *,
    cache_root: Path,
    insecure: bool = False,
    progress: ByteProgress | None = None,
    log: Log | None = None,
    files: Sequence[FileCopy] = (),
    spec_dir: Path | None = None,
) -> ConvertedImage:
    """Write ``out_dir/vmlinux`` and ``out_dir/rootfs.ext4`` for the image ``ref`` names,
    with ``files`` (an Environment spec's, relative to ``spec_dir``) added over its layers.

    Raises:
        RegistryError: unreachable, refused, not an image, or any content that does not
            match its digest, is hostile, or is larger than the pull limit.
        BuildError: no kernel is available, the image's user cannot be resolved, or the
            file system cannot be written.
        SpecError: a ``files`` entry is refused (:mod:`.files`).
    """
    from pyro.environments.artifact import max_pull_bytes
    from pyro.oci.client import RegistryClient
    from pyro.oci.image import fetch_layer, image_config, image_manifest

    started = time.monotonic()
    limit = max_pull_bytes()
    client = RegistryClient(ref, insecure=insecure)
    manifest = image_manifest(client, limit=limit)
    config = image_config(client, manifest, work)
    diff_ids = _diff_ids(config, ref, len(manifest.layers))
    kernel = find_kernel(cache_root)
    tree = Tree(work / "tree")
    budget = limit
    total = sum(layer.size for layer in manifest.layers)
    done = 0
    for index, layer in enumerate(manifest.layers):
        what = f"layer {index} ({layer.digest[:19]}) of {ref}"
        blob = work / "layer.blob"

        def moved(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress("download layers", done, total)

        fetch_layer(client, layer, blob, moved)
        with open(blob, "rb") as raw:
            reader = _decompressor(layer.compression, raw)
            try:
                diff_id = apply_layer(tree, reader, index, what, budget)
            except (zstandard.ZstdError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
                raise layer_error(f"{what} does not decompress: {exc}") from exc
            except OSError as exc:
                raise BuildError(f"cannot unpack {what}: {exc.strerror or exc}") from exc
        blob.unlink()
        if diff_id != diff_ids[index]:
            raise layer_error(
                f"{what} unpacks to {diff_id[:19]}…, not the {diff_ids[index][:19]}… its "
                "image config declares; rejected",
                "the image is corrupt or was tampered with; push it again",
            )
        if log is not None:
            log(f"applied layer {index + 1}/{len(manifest.layers)}")
    added = add_files(tree, files, spec_dir or Path.cwd()) if files else None
    if added is not None and log is not None:
        log(f"added the spec's files ({added[:19]}…)")
    defaults = image_defaults(config, tree, ref)
    _finish(tree, defaults)
    out_dir.mkdir(parents=True, exist_ok=True)
    _link_or_copy(kernel, out_dir / KERNEL_FILE)
    size = write_ext4(tree, out_dir / ROOTFS_FILE, work)
    metadata = {
        "image": {
            "reference": str(ref),
            "digest": manifest.digest,
            "manifestDigest": manifest.manifest_digest,
            "configDigest": manifest.config_digest,
            "layers": [layer.digest for layer in manifest.layers],
            "platform": "linux/amd64",
            "droppedXattrs": tree.dropped_xattrs,
        },
        "rootfs": {"image": ROOTFS_FILE, "sizeMiB": size, "files": len(tree.entries)},
        **({"files": {"digest": added, "entries": len(files)}} if added is not None else {}),
        "kernelFrom": KERNEL_FROM,
        "convertSeconds": round(time.monotonic() - started, 1),
    }
    return ConvertedImage(manifest.digest, manifest.manifest_digest, defaults, metadata)


def _decompressor(compression: str, raw: BinaryIO) -> Readable:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20)
    return raw


def _diff_ids(config: dict[str, Any], ref: OciRef, layers: int) -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not (isinstance(ids, list) and len(ids) == layers and all(isinstance(i, str) for i in ids)):
        raise RegistryError(
            f"the image config of {ref} does not list one rootfs.diff_ids entry per layer",
            "the image is malformed; build and push it again",
        )
    arch, system = config.get("architecture"), config.get("os")
    if (arch, system) != ("amd64", "linux"):
        raise RegistryError(
            f"{ref} is a {system}/{arch} image; pyro guests are linux/amd64",
            "push a linux/amd64 image (or a multi-arch index that has one)",
        )
    return ids


def find_kernel(cache_root: Path) -> Path:
    """The vmlinux of :data:`KERNEL_FROM`: its install in this cache, else its kernel build.

    Raises:
        BuildError: neither is there and the kernel cannot be built here.
    """
    from pyro.environments.cache.store import Cache

    install = Cache(cache_root).lookup(KERNEL_FROM)
    if install is not None:
        return install.kernel
    from pyro.environments.build.kernel import build_kernel
    from pyro.environments.catalog import lookup

    entry = lookup(KERNEL_FROM)
    if entry.spec.spec.kernel is None:  # pragma: no cover - the catalog's is built from source
        raise BuildError(f"the catalog's {KERNEL_FROM} has no kernel recipe")
    try:
        return build_kernel(entry.spec.spec.kernel, entry.spec_dir, cache_root=cache_root)
    except PyroError as exc:
        raise BuildError(
            f"an image needs the {KERNEL_FROM} kernel, which is neither installed nor "
            f"buildable here ({exc.summary})",
            f"run 'pyro env pull {KERNEL_FROM}' first",
        ) from exc


def image_defaults(config: dict[str, Any], tree: Tree, ref: OciRef) -> ImageDefaults:
    """The config's ``Env``, ``WorkingDir``, ``User``, ``Entrypoint`` and ``Cmd``, checked;
    a user name is resolved in the image's own ``/etc/passwd`` and ``/etc/group``.

    Raises:
        BuildError: a value pyro cannot carry (a line break, a relative folder, an unknown
            user or group).
    """
    body = config.get("config")
    body = body if isinstance(body, dict) else {}
    env = _strings(body.get("Env"), "Env", ref)[:MAX_ENV]
    for item in env:
        if "=" not in item or "\n" in item or "\x00" in item:
            raise BuildError(
                f"the image config of {ref} has an Env entry pyro cannot pass: {item[:80]!r}",
                "Env entries are KEY=VALUE on one line",
            )
    working_dir = body.get("WorkingDir") or ""
    if not isinstance(working_dir, str) or (working_dir and not working_dir.startswith("/")):
        raise BuildError(f"the image config of {ref} has a WorkingDir that is not absolute")
    if "\n" in working_dir or "\x00" in working_dir:
        raise BuildError(f"the image config of {ref} has a WorkingDir with a line break")
    user = body.get("User") or ""
    if not isinstance(user, str):
        raise BuildError(f"the image config of {ref} has a User that is not a string")
    uid, gid = resolve_user(user, tree, ref)
    return ImageDefaults(
        env=tuple(env),
        working_dir=working_dir,
        user=user,
        uid=uid,
        gid=gid,
        entrypoint=tuple(_strings(body.get("Entrypoint"), "Entrypoint", ref)),
        cmd=tuple(_strings(body.get("Cmd"), "Cmd", ref)),
    )


def _strings(value: Any, what: str, ref: OciRef) -> list[str]:
    if value is None:
        return []
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise BuildError(f"the image config of {ref} has a {what} that is not a list of strings")
    return list(value)


def resolve_user(user: str, tree: Tree, ref: OciRef) -> tuple[int, int]:
    """uid and gid of ``USER[:GROUP]`` (names or numbers), as the image's files say.

    Raises:
        BuildError: a name that the image's /etc/passwd or /etc/group does not have.
    """
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    passwd = _table(tree, "etc/passwd")
    uid_gid: tuple[int, int] | None = None
    if name.isdigit():
        uid = int(name)
        row = next((r for r in passwd if r[2] == name), None)
        uid_gid = (uid, int(row[3]) if row and row[3].isdigit() else 0)
    else:
        row = next((r for r in passwd if r[0] == name), None)
        if row is None or not (row[2].isdigit() and row[3].isdigit()):
            raise BuildError(
                f"the image {ref} runs as user {name!r}, which its /etc/passwd does not have",
                "use a numeric User (e.g. 1000:1000) or add the user to the image",
            )
        uid_gid = (int(row[2]), int(row[3]))
    if not group:
        return uid_gid
    if group.isdigit():
        return uid_gid[0], int(group)
    row = next((r for r in _table(tree, "etc/group") if r[0] == group), None)
    if row is None or not row[2].isdigit():
        raise BuildError(
            f"the image {ref} runs as group {group!r}, which its /etc/group does not have",
            "use a numeric group (e.g. 1000:1000) or add the group to the image",
        )
    return uid_gid[0], int(row[2])


def _table(tree: Tree, path: str) -> list[list[str]]:
    data = tree.read_file(path) or b""
    rows = [line.split(":") for line in data.decode("utf-8", "replace").splitlines()]
    return [row for row in rows if len(row) >= 4 or (path == "etc/group" and len(row) >= 3)]


def defaults_text(defaults: ImageDefaults) -> str:
    """The agent's defaults file: ``uid N``, ``gid N``, ``cwd PATH`` and ``env K=V`` lines."""
    lines = [f"uid {defaults.uid}", f"gid {defaults.gid}"]
    if defaults.working_dir:
        lines.append(f"cwd {defaults.working_dir}")
    lines += [f"env {item}" for item in defaults.env]
    return "\n".join(lines) + "\n"


def _finish(tree: Tree, defaults: ImageDefaults) -> None:
    """Add what the agent needs (mount points, the defaults file) without touching the rest."""
    for name in MOUNT_POINTS:
        entry = tree.entries.get(name)
        if entry is None:
            tree.host_path(name).mkdir(0o755)
            mode = 0o1777 if name == "tmp" else 0o755
            owner = (defaults.uid, defaults.gid) if name == "workspace" else (0, 0)
            tree.add(name, Entry("dir", mode, *owner, 0))
        elif entry.kind != "dir":
            raise BuildError(
                f"the image has /{name} as a {entry.kind}; the guest agent needs a folder there"
            )
    if defaults.working_dir:
        missing = defaults.working_dir.strip("/")
        so_far = ""
        for part in [p for p in missing.split("/") if p not in ("", ".")]:
            if part == "..":
                raise BuildError(f"WorkingDir {defaults.working_dir!r} climbs out with '..'")
            so_far = f"{so_far}/{part}" if so_far else part
            entry = tree.entries.get(so_far)
            if entry is None:
                tree.host_path(so_far).mkdir(0o755)
                tree.add(so_far, Entry("dir", 0o755, defaults.uid, defaults.gid, 0))
            elif entry.kind != "dir":
                raise BuildError(f"WorkingDir {defaults.working_dir!r} is not a folder")
    tree.remove(DEFAULTS_FILE)
    host = tree.host_path(DEFAULTS_FILE)
    host.write_text(defaults_text(defaults))
    tree.add(DEFAULTS_FILE, Entry("file", 0o644, 0, 0, 0))


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
