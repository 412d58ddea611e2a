"""Large copy-ins as OCI artifacts, against a real registry: what the controller pushes
and a node pulls, checks and unpacks (no Ray needed: these are the two ends' own code)."""

from __future__ import annotations

import io
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.registry import Registry

from pyro.cluster import copyin
from pyro.cluster.worker import unpack
from pyro.errors import PyroError, RegistryError

pytestmark = pytest.mark.registry


def _tree(tmp_path: Path) -> tuple[Path, list[str]]:
    base = tmp_path / "spec"
    (base / "data" / "deep").mkdir(parents=True)
    (base / "data" / "deep" / "blob.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (base / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (base / "run.sh").chmod(0o755)
    return base, ["data", "run.sh"]


def test_a_pushed_copy_in_is_pulled_by_digest_once_per_node_and_unpacked(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    base, names = _tree(tmp_path)
    tar = tmp_path / "copy-in.tar"
    size = copyin.pack_to(base, names, tar)
    environment = f"oci://{fresh_registry.address}/pyro/debian@sha256:{'a' * 64}"
    repository = copyin.repository_for(environment, {})
    descriptor = copyin.push(tar, repository)
    assert descriptor["size"] == size and descriptor["ref"].startswith(
        f"oci://{fresh_registry.address}/pyro/debian/copy-in@sha256:"
    )
    cache = tmp_path / "node-cache"
    pulled = copyin.fetch(descriptor, cache)
    assert pulled.read_bytes() == tar.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    unpack(pulled, out, max_bytes=copyin.copy_in_max_bytes())
    assert (out / "data" / "deep" / "blob.bin").read_bytes() == bytes(range(256)) * 4096
    assert (out / "run.sh").stat().st_mode & 0o777 == 0o755
    # A second run on the node takes it from the cache: no blob is downloaded again.
    before = len([r for r in fresh_registry.blob_requests() if r.method == "GET"])
    assert copyin.fetch(descriptor, cache) == pulled
    assert len([r for r in fresh_registry.blob_requests() if r.method == "GET"]) == before


def test_runs_fetching_one_digest_at_once_download_it_once_and_leave_no_partials(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    base, names = _tree(tmp_path)
    tar = tmp_path / "copy-in.tar"
    copyin.pack_to(base, names, tar)
    environment = f"oci://{fresh_registry.address}/pyro/debian@sha256:{'a' * 64}"
    descriptor = copyin.push(tar, copyin.repository_for(environment, {}))
    cache = tmp_path / "node-cache"
    before = len([r for r in fresh_registry.blob_requests() if r.method == "GET"])
    with ThreadPoolExecutor(4) as pool:  # four runs of one apply landing on one node
        pulled = set(pool.map(lambda _: copyin.fetch(descriptor, cache), range(4)))
    assert len(pulled) == 1 and pulled.pop().read_bytes() == tar.read_bytes()
    gets = [r for r in fresh_registry.blob_requests() if r.method == "GET"]
    assert len(gets) - before == 1  # the others waited on the digest's lock, then hit
    assert sorted(p.name for p in cache.iterdir()) == [f"{descriptor['digest'][7:]}.tar"]


def test_a_tampered_blob_or_a_retagged_manifest_is_refused(
    fresh_registry: Registry, tmp_path: Path
) -> None:
    base, names = _tree(tmp_path)
    tar = tmp_path / "copy-in.tar"
    copyin.pack_to(base, names, tar)
    repository = f"oci://{fresh_registry.address}/team/copy-ins"
    descriptor = copyin.push(tar, repository)
    # Another layer than the controller said: refused before the blob is fetched.
    other = {**descriptor, "digest": "sha256:" + "0" * 64}
    with pytest.raises(PyroError, match="not the one the controller pushed"):
        copyin.fetch(other, tmp_path / "a")
    # The registry's copy of the bytes changed: the digest check refuses it, nothing kept.
    stored = fresh_registry.blob_path(descriptor["digest"])
    data = bytearray(stored.read_bytes())
    data[600] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="does not match its digest"):
        copyin.fetch(descriptor, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../escape", tarfile.REGTYPE, ""),
        ("link", tarfile.SYMTYPE, "/etc/passwd"),
        ("dev", tarfile.CHRTYPE, ""),
    ],
)
def test_a_hostile_tar_pulled_as_an_artifact_is_refused_as_every_copy_in_is(
    fresh_registry: Registry, tmp_path: Path, name: str, kind: bytes, link: str
) -> None:
    tar = tmp_path / "hostile.tar"
    with tarfile.open(tar, mode="w") as out:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        info.size = 2 if kind == tarfile.REGTYPE else 0
        out.addfile(info, io.BytesIO(b"x\n") if kind == tarfile.REGTYPE else None)
    descriptor = copyin.push(tar, f"oci://{fresh_registry.address}/team/copy-ins")
    pulled = copyin.fetch(descriptor, tmp_path / "cache")
    target = tmp_path / "spec"
    target.mkdir()
    with pytest.raises(PyroError, match="refused entry"):
        unpack(pulled, target, max_bytes=copyin.copy_in_max_bytes())
    assert list(target.iterdir()) == [] and not (tmp_path / "escape").exists()
