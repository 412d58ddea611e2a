"""Sparse copies and digests of saved guest RAM (real files, no VMM)."""

from __future__ import annotations

import os
from pathlib import Path

from pyro.vmm.sparse import copy_sparse, data_extents, sparse_digest

MIB = 1 << 20


def _sparse_file(path: Path) -> None:
    with path.open("wb") as f:
        f.seek(MIB)
        f.write(b"a" * 8192)
        f.seek(5 * MIB)
        f.write(b"b" * 100)
        f.truncate(16 * MIB)


def test_copy_keeps_bytes_and_holes(tmp_path: Path) -> None:
    source, dest = tmp_path / "source", tmp_path / "dest"
    _sparse_file(source)
    fd = os.open(source, os.O_RDONLY)
    try:
        copy_sparse(fd, dest, 16 * MIB)
    finally:
        os.close(fd)
    assert dest.read_bytes() == source.read_bytes()
    assert os.stat(dest).st_blocks * 512 < MIB  # the 16 MiB of holes took no space
    fd = os.open(dest, os.O_RDONLY)
    try:
        extents = list(data_extents(fd, 16 * MIB))
    finally:
        os.close(fd)
    # File systems round extents to their block size; the data lies inside them.
    assert len(extents) == 2
    assert extents[0][0] <= MIB < MIB + 8192 <= sum(extents[0])
    assert extents[1][0] <= 5 * MIB < 5 * MIB + 100 <= sum(extents[1])


def test_copy_of_a_memfd(tmp_path: Path) -> None:
    fd = os.memfd_create("guest-ram")
    try:
        os.ftruncate(fd, 8 * MIB)
        os.pwrite(fd, b"page" * 1024, 3 * MIB)
        copy_sparse(fd, tmp_path / "ram", 8 * MIB)
    finally:
        os.close(fd)
    data = (tmp_path / "ram").read_bytes()
    assert len(data) == 8 * MIB
    assert data[3 * MIB : 3 * MIB + 4096] == b"page" * 1024
    assert data.count(0) == 8 * MIB - 4096


def test_digest_sees_bytes_and_holes_that_fill(tmp_path: Path) -> None:
    path = tmp_path / "ram"
    _sparse_file(path)
    first = sparse_digest(path)
    assert sparse_digest(path) == first
    with path.open("r+b") as f:  # zeros over a hole: the same bytes, another layout
        f.seek(10 * MIB)
        f.write(bytes(4096))
    assert sparse_digest(path) != first
    _sparse_file(path)
    assert sparse_digest(path) == first
    with path.open("r+b") as f:
        f.seek(MIB + 1)
        f.write(b"z")
    assert sparse_digest(path) != first


def test_empty_and_all_hole_files(tmp_path: Path) -> None:
    empty, holes = tmp_path / "empty", tmp_path / "holes"
    empty.write_bytes(b"")
    with holes.open("wb") as f:
        f.truncate(4 * MIB)
    assert sparse_digest(empty) != sparse_digest(holes)
    fd = os.open(holes, os.O_RDONLY)
    try:
        assert list(data_extents(fd, 4 * MIB)) == []
    finally:
        os.close(fd)
