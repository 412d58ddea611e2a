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
    assert not list(Path("/dev/shm").glob("pyro-disk-*"))  # the raw copy is gone


def test_a_name_the_listing_cannot_carry_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "workspace").mkdir(parents=True)
    (root / "workspace" / "evil\n/7/0100644/0/0/fake/1/").mkdir(parents=True)
    qcow = _image(tmp_path, root)
    with disk.opened(qcow) as reader, pytest.raises(GuestPathError, match="cannot be read"):
        reader.list_dir("/workspace")


def test_a_broken_disk_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "overlay.qcow2"
    bad.write_bytes(b"not a disk")
    from pyro.errors import VMMError

    with pytest.raises(VMMError, match="copying the disk"), disk.opened(bad):
        pass
