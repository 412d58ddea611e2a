"""The data disk's decision and image, built for real with mke2fs (no guest: the guest side
is tests/e2e/test_task_datadisk.py). Reading the image back here is the test's business
only: pyro never reads one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyro.errors import UsageError
from pyro.machines import datadisk
from pyro.machines.datadisk import Entry, ImageBuild

needs_e2fsprogs = pytest.mark.skipif(
    datadisk._tool("mke2fs") is None or datadisk._tool("debugfs") is None,
    reason="e2fsprogs (mke2fs, debugfs) is not installed",
)


def test_threshold_default_override_and_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRO_DATA_DISK_MIN_BYTES", raising=False)
    assert datadisk.threshold() == datadisk.DEFAULT_THRESHOLD
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", "0")
    assert datadisk.threshold() == 0
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", "8MB")
    with pytest.raises(UsageError) as caught:
        datadisk.threshold()
    assert "PYRO_DATA_DISK_MIN_BYTES" in caught.value.summary and caught.value.hint


def test_the_decision_weighs_bytes_and_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", str(1 << 20))
    monkeypatch.setattr(datadisk, "_tool", lambda name: f"/usr/sbin/{name}")
    weight = datadisk.FILE_WEIGHT
    assert not datadisk.wanted("qemu-tcg", 0, (1 << 20) - 1)
    assert datadisk.wanted("qemu-tcg", 0, 1 << 20)
    assert datadisk.wanted("qemu-kvm", (1 << 20) // weight, 0)  # many small files
    assert not datadisk.wanted("qemu-tcg", (1 << 20) // weight - 1, weight - 1)
    assert not datadisk.wanted("firecracker", 10_000, 1 << 30)
    monkeypatch.setattr(datadisk, "_tool", lambda name: None)  # no e2fsprogs: the agent
    assert not datadisk.wanted("qemu-tcg", 10_000, 1 << 30)


def _tree(tmp_path: Path) -> list[Entry]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a" * 5000)
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    return [
        Entry("sub", "d"),
        Entry("sub/a.txt", "f", src / "a.txt", 0o640, 5000),
        Entry("sub/tool", "f", src / "tool", 0o4755, 10),
        Entry("link", "l", target="sub/a.txt"),
    ]


def _debugfs(image: Path, request: str) -> str:
    tool = datadisk._tool("debugfs")
    assert tool is not None
    return subprocess.run(
        [tool, "-R", request, str(image)], capture_output=True, text=True, check=True
    ).stdout


@needs_e2fsprogs
def test_the_image_holds_exactly_the_entries(tmp_path: Path) -> None:
    folder = tmp_path / "vm"
    folder.mkdir()
    build = ImageBuild(_tree(tmp_path), folder)
    build.wait()
    assert build.bytes == 5010
    assert [e.name for e in build.setid] == ["sub/tool"]
    assert os.stat(build.image).st_mode & 0o777 == 0o600
    assert not (folder / "workspace.staging").exists()  # the staging copy is gone
    top = _debugfs(build.image, "ls -l /")
    assert "lost+found" not in top and " sub" in top and " link" in top
    sub = _debugfs(build.image, "ls -l /sub")
    assert "100640" in sub and "104755" in sub
    assert 'Fast link dest: "sub/a.txt"' in _debugfs(build.image, "stat /link")
    assert "Type: directory    Mode:  0755" in _debugfs(build.image, "stat /sub")
    if os.geteuid() == 0:
        assert not build.user_owned
        assert "User:     0   Group:     0" in _debugfs(build.image, "stat /sub/a.txt")


@needs_e2fsprogs
def test_a_lost_and_found_of_the_tree_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "vm"
    folder.mkdir()
    build = ImageBuild([Entry("lost+found", "d")], folder)
    build.wait()
    assert "lost+found" in _debugfs(build.image, "ls -l /")


@needs_e2fsprogs
def test_a_file_gone_before_the_copy_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "vm"
    folder.mkdir()
    build_entries = _tree(tmp_path)
    os.unlink(tmp_path / "src" / "a.txt")  # after the walk saw it, before the copy
    build = ImageBuild(build_entries, folder)
    with pytest.raises(UsageError) as caught:
        build.wait()
    assert "cannot copy" in caught.value.summary and "a.txt" in caught.value.summary
    build.abandon()
    assert not build.image.exists()
    assert not (folder / "workspace.staging").exists()


def test_no_room_for_the_image_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UsageError) as caught:
        ImageBuild(_tree(tmp_path), missing)
    assert "cannot build the data disk" in caught.value.summary
    assert "PYRO_DATA_DISK_MIN_BYTES" in (caught.value.hint or "")


@needs_e2fsprogs
def test_the_staging_copy_goes_when_the_image_is_built(tmp_path: Path) -> None:
    before = set(Path("/dev/shm").glob("pyro-room-*")) if Path("/dev/shm").is_dir() else set()
    folder = tmp_path / "vm"
    folder.mkdir()
    ImageBuild(_tree(tmp_path), folder).wait()
    after = set(Path("/dev/shm").glob("pyro-room-*")) if Path("/dev/shm").is_dir() else set()
    assert after <= before
    assert sorted(p.name for p in folder.iterdir()) == ["workspace.img"]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_a_staging_copy_of_a_dead_owner_is_reaped() -> None:
    from pyro.process.identity import own_identity

    dead = subprocess.Popen(["true"])
    dead.wait()
    pid, ticks = own_identity()
    mine = Path(f"/dev/shm/pyro-stage-{pid}-{ticks:.0f}-test")
    gone = Path(f"/dev/shm/pyro-stage-{dead.pid}-1-test")
    odd = Path("/dev/shm/pyro-stage-not-a-pid")
    for path in (mine, gone, odd):
        path.mkdir()
        (path / "f").write_bytes(b"x")
    try:
        reaped = datadisk.reap_staging()
        assert gone.name in reaped and not gone.exists()
        assert mine.exists() and odd.exists()
    finally:
        for path in (mine, gone, odd):
            shutil.rmtree(path, ignore_errors=True)


def test_the_default_follows_the_measured_crossover(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/performance.md, 'The threshold': where the disk started to win."""
    monkeypatch.delenv("PYRO_DATA_DISK_MIN_BYTES", raising=False)
    monkeypatch.setattr(datadisk, "_tool", lambda name: f"/usr/sbin/{name}")
    assert not datadisk.wanted("qemu-tcg", 1, 1 << 20)  # 1 MiB in one file: the agent
    assert datadisk.wanted("qemu-tcg", 1, 4 << 20)  # 4 MiB: the disk
    assert not datadisk.wanted("qemu-tcg", 40, 40 * 4096)  # 40 small files: the agent
    assert datadisk.wanted("qemu-tcg", 50, 50 * 4096)  # 50: the disk
    assert datadisk.wanted("qemu-tcg", 2001, 70 << 20)  # the bench's seed64 tree


@needs_e2fsprogs
@pytest.mark.hostile
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_concurrent_builds_share_one_dev_shm_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three data disks staged at once against /dev/shm room for one: one stages there,
    the others in their VM's folder; each checking the room alone would let all three in."""
    import threading

    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    entries = _tree(tmp_path)
    want = 2 * sum(e.size for e in entries) + (256 << 20)
    real_statvfs = os.statvfs

    def statvfs(path: object) -> os.statvfs_result:
        result = real_statvfs(path)  # type: ignore[arg-type]
        if str(path) != "/dev/shm":
            return result
        fields = list(result)
        fields[4] = (want + want // 2) // result.f_frsize  # f_bavail: room for one, not two
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", statvfs)
    barrier = threading.Barrier(3, timeout=60)
    staged: list[Path] = []
    real_mkfs = ImageBuild._mkfs

    def mkfs(self: ImageBuild) -> None:
        staged.append(self._staging.parent)
        barrier.wait()  # all three hold their staging copies at once
        real_mkfs(self)

    monkeypatch.setattr(ImageBuild, "_mkfs", mkfs)
    before = set(Path("/dev/shm").iterdir())
    folders = [tmp_path / f"vm{i}" for i in range(3)]
    for folder in folders:
        folder.mkdir()
    builds = [ImageBuild(entries, folder) for folder in folders]
    for build in builds:
        build.wait()
    in_shm = [p for p in staged if p == Path("/dev/shm")]
    assert len(staged) == 3 and len(in_shm) == 1, staged
    for folder in folders:  # each staging copy went with its build
        assert sorted(p.name for p in folder.iterdir()) == ["workspace.img"]
    assert set(Path("/dev/shm").iterdir()) <= before  # no staging copy left in memory
    assert list((tmp_path / "state" / "shm-room").glob("pyro-room-*")) == []  # room given back
