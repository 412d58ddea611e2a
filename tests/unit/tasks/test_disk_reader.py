"""Reading a qcow2 disk offline (pyro.tasks.disk) on real ext4 images built with mke2fs -d:
listings, reads, link targets, caps, and names a listing cannot carry."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyro.errors import GuestPathError, LimitError
from pyro.host import shmroom
from pyro.tasks import disk

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin") for t in
            ("qemu-img", "mke2fs", "debugfs", "e2fsck")),
    reason="needs qemu-img and e2fsprogs",
)  # fmt: skip


def _image(tmp_path: Path, tree: Path) -> Path:
    raw, qcow = tmp_path / "fs.raw", tmp_path / "overlay.qcow2"
    mke2fs = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
    subprocess.run(
        [mke2fs, "-q", "-F", "-t", "ext4", "-d", str(tree), str(raw), "16M"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True
    )
    return qcow


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "workspace" / "sub").mkdir(parents=True)
    (root / "workspace" / "a.txt").write_text("hello\n")
    (root / "workspace" / "sub" / "big").write_bytes(b"x" * 100_000)
    (root / "workspace" / "run.sh").write_text("#!/bin/sh\n")
    (root / "workspace" / "run.sh").chmod(0o755)
    os.symlink("sub/big", root / "workspace" / "inside")
    os.symlink("/etc/shadow", root / "workspace" / "outside")
    return root


def test_lists_reads_and_exports_like_the_agent(tmp_path: Path) -> None:
    from pyro.tasks.files import export_path, list_entries

    qcow = _image(tmp_path, _tree(tmp_path))
    with disk.opened(qcow) as reader:
        entries = {e.name: e for e in list_entries(reader, "/workspace")}
        assert sorted(entries) == ["a.txt", "inside", "outside", "run.sh", "sub"]
        assert entries["run.sh"].mode == 0o755 and entries["a.txt"].size == 6
        assert entries["inside"].link_target == "sub/big"
        assert entries["sub"].kind == "directory"
        out = io.BytesIO()
        assert reader.get_file("/workspace/sub/big", out) == 100_000
        assert out.getvalue() == b"x" * 100_000
        with pytest.raises(LimitError, match="larger than 10 bytes"):
            reader.get_file("/workspace/sub/big", io.BytesIO(), max_bytes=10)
        with pytest.raises(GuestPathError, match="symlink"):
            reader.get_file("/workspace/outside", io.BytesIO())
        with pytest.raises(GuestPathError, match="follow no links"):
            reader.stat("/workspace/inside/x")
        with pytest.raises(GuestPathError, match="No such file"):
            reader.stat("/workspace/nope")
        result = export_path(reader, "/workspace", tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "hello\n"
    assert os.readlink(tmp_path / "out" / "inside") == "sub/big"
    assert not (tmp_path / "out" / "outside").exists()  # leaves the export: skipped
    assert any("outside" in s for s in result.skipped)
    assert not reader.work.exists()  # the raw copy is gone


def test_a_name_the_listing_cannot_carry_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "workspace").mkdir(parents=True)
    (root / "workspace" / "evil\n/7/0100644/0/0/fake/1/").mkdir(parents=True)
    qcow = _image(tmp_path, root)
    with disk.opened(qcow) as reader, pytest.raises(GuestPathError, match="cannot be read"):
        reader.list_dir("/workspace")


@pytest.mark.hostile
def test_what_debugfs_prints_is_capped_while_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder whose listing is longer than the cap on a tool's output (a guest can craft
    a directory that lists without end): refused, never gathered whole in memory."""
    root = tmp_path / "tree"
    (root / "workspace").mkdir(parents=True)
    for n in range(300):
        (root / "workspace" / f"file-with-a-long-name-{n:04}").write_text("")
    qcow = _image(tmp_path, root)
    monkeypatch.setattr(disk, "MAX_TOOL_OUTPUT", 4096, raising=False)
    with disk.opened(qcow) as reader, pytest.raises(LimitError, match="more than 4096 bytes"):
        reader.list_dir("/workspace")


def test_reading_link_targets_leaves_no_dump_behind(tmp_path: Path) -> None:
    """Targets too long for the inode are dumped to be read: each dump goes once read (a
    folder of many links must not pile them up in the scratch folder)."""
    root = tmp_path / "tree"
    (root / "workspace").mkdir(parents=True)
    for n in range(20):
        os.symlink("t" * 100 + str(n), root / "workspace" / f"link-{n}")
    qcow = _image(tmp_path, root)
    with disk.opened(qcow) as reader:
        entries = reader.list_dir("/workspace")
        assert sorted(e.link_target or "" for e in entries)[0] == "t" * 100 + "0"
        assert sorted(p.name for p in reader.work.iterdir()) == ["disk.raw"]


def test_a_broken_disk_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "overlay.qcow2"
    bad.write_bytes(b"not a disk")
    from pyro.errors import VMMError

    with pytest.raises(VMMError, match="copying the disk"), disk.opened(bad):
        pass


def _reader_in_shm(qcow: Path, barrier: object, found: list[bool]) -> None:
    """Open ``qcow`` offline, note whether its scratch copy is in /dev/shm, and hold it
    open until every reader has opened its own."""
    with disk.opened(qcow) as reader:
        found.append(reader.work.parent == shmroom.SHM)
        barrier.wait(timeout=60)  # type: ignore[attr-defined]


def _process_readers(qcow: Path, barrier: object, queue: object, threads: int) -> None:
    import threading

    found: list[bool] = []
    workers = [
        threading.Thread(target=_reader_in_shm, args=(qcow, barrier, found)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(found)  # type: ignore[attr-defined]


@pytest.mark.hostile
def test_concurrent_readers_share_one_dev_shm_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six readers at once (three processes of two threads) against /dev/shm room for two
    16 MiB disks (a reader needs twice its disk): two copy into /dev/shm, the others into
    the disk's folder; each checking the room alone would have let all six in."""
    import multiprocessing

    qcow = _image(tmp_path, _tree(tmp_path))
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    real_statvfs = os.statvfs

    def statvfs(path: object) -> os.statvfs_result:
        result = real_statvfs(path)  # type: ignore[arg-type]
        if str(path) != "/dev/shm":
            return result
        budget = (2 * 2 * (16 << 20) + (8 << 20)) // result.f_frsize  # room for two, not three
        fields = list(result)
        fields[4] = budget  # f_bavail
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", statvfs)
    if real_statvfs("/dev/shm").f_bavail * real_statvfs("/dev/shm").f_frsize < 256 << 20:
        pytest.skip("/dev/shm has less than 256 MiB free here")
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(6), context.Queue()
    processes = [
        context.Process(target=_process_readers, args=(qcow, barrier, queue, 2)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    found = [flag for _ in processes for flag in queue.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert len(found) == 6
    assert found.count(True) == 2, found
    # Every reservation was given back: a reader now gets /dev/shm again.
    with disk.opened(qcow) as reader:
        assert reader.work.parent == shmroom.SHM
