"""The tars copy-ins and artifacts travel in between controller and nodes: what unpacks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pyro.cluster.worker import pack, unpack
from pyro.errors import PyroError


def test_files_and_folders_round_trip_with_their_modes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "out" / "deep").mkdir(parents=True)
    (source / "out" / "deep" / "r.txt").write_text("hi\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    (source / "skip.txt").write_text("not asked for\n")
    target = tmp_path / "dst"
    target.mkdir()
    unpack(pack(source, ["out", "run.sh"]), target)
    assert (target / "out" / "deep" / "r.txt").read_text() == "hi\n"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not (target / "skip.txt").exists()


def hostile(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, 0 if kind != tarfile.REGTYPE else 2
        tar.addfile(info, io.BytesIO(b"x\n") if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        hostile("/etc/evil"),
        hostile("../escape"),
        hostile("a/../../escape"),
        hostile("link", tarfile.SYMTYPE, "/etc/passwd"),
        hostile("hard", tarfile.LNKTYPE, "/etc/passwd"),
        hostile("dev", tarfile.CHRTYPE),
        hostile("fifo", tarfile.FIFOTYPE),
    ],
)
def test_anything_but_files_and_folders_inside_is_refused(tmp_path: Path, data: bytes) -> None:
    target = tmp_path / "dst"
    target.mkdir()
    with pytest.raises(PyroError, match="refused entry"):
        unpack(data, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_nothing_is_written_through_a_symlink_already_in_the_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "out").mkdir(parents=True)
    (source / "out" / "r.txt").write_text("hi\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "dst"
    target.mkdir()
    (target / "out").symlink_to(elsewhere)
    with pytest.raises(PyroError, match="a symlink is in its way"):
        unpack(pack(source, ["out"]), target)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("pax", [False, True], ids=["gnu-sparse", "pax-sparse"])
def test_a_sparse_member_cannot_expand_on_the_controller(tmp_path: Path, pax: bool) -> None:
    """A hostile node's 2 KiB tar declaring a 64 MiB sparse file writes nothing."""
    from helpers.hostile_tars import sparse_bomb

    target = tmp_path / "dst"
    target.mkdir()
    with pytest.raises(PyroError, match="refused entry"):
        unpack(sparse_bomb("bomb", 64 << 20, pax=pax), target)
    assert list(target.iterdir()) == []
