"""Tier 0 of copy-ins on a cluster: which way a tar travels, and what a node refuses
before it downloads or while it unpacks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pyro.cluster import copyin, ray_exec
from pyro.cluster.worker import unpack
from pyro.errors import PyroError, UsageError

ENV = "oci://127.0.0.1:5000/pyro/debian@sha256:" + "a" * 64


def test_the_threshold_is_64_mib_unless_configured_and_a_bad_value_is_refused() -> None:
    assert copyin.artifact_threshold({}) == 64 * 1024 * 1024
    assert copyin.artifact_threshold({copyin.THRESHOLD_ENV: "1024"}) == 1024
    for bad in ("1e6", "-1", "lots", "9" * 21):
        with pytest.raises(UsageError, match="PYRO_CLUSTER_ARTIFACT_MIN_BYTES"):
            copyin.artifact_threshold({copyin.THRESHOLD_ENV: bad})


def test_only_a_tar_larger_than_the_threshold_becomes_an_artifact() -> None:
    assert not copyin.uses_artifact(1024, 1024)
    assert copyin.uses_artifact(1025, 1024)
    assert not copyin.uses_artifact(0, 0)


def test_artifacts_go_under_the_environments_repository_or_the_configured_one() -> None:
    assert copyin.repository_for(ENV, {}) == "oci://127.0.0.1:5000/pyro/debian/copy-in"
    configured = {copyin.REPOSITORY_ENV: "oci://reg.example:443/team/copyins"}
    assert copyin.repository_for(ENV, configured) == "oci://reg.example:443/team/copyins"
    with pytest.raises(UsageError, match="PYRO_CLUSTER_ARTIFACT_REPOSITORY"):
        copyin.repository_for(ENV, {copyin.REPOSITORY_ENV: "not a reference"})


class _Ray:
    """Ray's object store as the controller uses it: ``put`` only."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def put(self, value: bytes) -> str:
        self.values.append(value)
        return "ref"


def _ship(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int
) -> tuple[Any, list[tuple[int, str]], _Ray]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(b"x" * 4096)
    pushed: list[tuple[int, str]] = []

    def push(tar: Path, repository: str) -> dict[str, Any]:
        pushed.append((tar.stat().st_size, repository))
        return {"ref": f"{repository}@sha256:{'b' * 64}", "digest": "d", "size": 1}

    monkeypatch.setenv(copyin.THRESHOLD_ENV, str(threshold))
    monkeypatch.setattr(copyin, "push", push)
    ray = _Ray()
    return ray_exec._ship_copy_ins(ray, tmp_path, ["src"], ENV), pushed, ray


def test_the_controller_puts_a_small_tree_in_the_object_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped, pushed, ray = _ship(tmp_path, monkeypatch, threshold=1 << 20)
    assert shipped == "ref" and pushed == []
    (tar,) = ray.values
    with tarfile.open(fileobj=io.BytesIO(tar)) as opened:
        assert opened.getnames() == ["src", "src/big.bin"]


def test_the_controller_pushes_a_large_tree_as_an_artifact_and_ships_only_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped, pushed, ray = _ship(tmp_path, monkeypatch, threshold=1024)
    assert ray.values == []
    ((size, repository),) = pushed
    assert size > 4096 and repository == "oci://127.0.0.1:5000/pyro/debian/copy-in"
    assert shipped["ref"].startswith(repository + "@sha256:")


@pytest.mark.parametrize("source", ["elsewhere/key", "here/..", "here/../secret/key"])
def test_the_controller_never_packs_a_source_whose_links_leave_the_spec_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    # A spec (from a cloned repository, say) with a link out of its folder: a local apply
    # refuses the source, so shipping must too, before its bytes reach the object store,
    # a registry or any node.
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("private")
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "elsewhere").symlink_to(tmp_path / "secret")
    (spec / "here").symlink_to(".")
    pushed: list[Path] = []
    monkeypatch.setattr(copyin, "push", lambda tar, repository: pushed.append(tar))
    monkeypatch.setenv(copyin.THRESHOLD_ENV, "0")
    ray = _Ray()
    for environment in (None, ENV):
        with pytest.raises(PyroError, match="outside") as caught:
            ray_exec._ship_copy_ins(ray, spec, [source], environment)
        assert source in str(caught.value)
    assert ray.values == [] and pushed == []


def test_a_node_refuses_an_artifact_larger_than_its_cap_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(copyin.MAX_ENV, "1")
    descriptor = {"ref": ENV, "digest": "sha256:" + "c" * 64, "size": 2 * 1024 * 1024}
    with pytest.raises(PyroError, match="more than this node takes"):
        copyin.fetch(descriptor, tmp_path)  # the registry named does not exist: no request
    for bad in ({"ref": ENV, "digest": "md5:x", "size": 1}, {"ref": ENV}, {}):
        with pytest.raises(PyroError, match="described wrongly"):
            copyin.fetch(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unpacking_stops_at_the_byte_cap(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            info.size = 600
            tar.addfile(info, io.BytesIO(b"y" * 600))
    target = tmp_path / "dst"
    target.mkdir()
    with pytest.raises(PyroError, match="pass 1000 bytes in all"):
        unpack(buffer.getvalue(), target, max_bytes=1000)
    assert list(target.iterdir()) == []  # every entry is checked before the first is written
    unpack(buffer.getvalue(), tmp_path, max_bytes=1200)
