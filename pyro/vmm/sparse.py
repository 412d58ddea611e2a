"""Sparse files: a saved guest's RAM is as large as the guest's memory but holds data only
where the guest touched it. These helpers move and hash only that data.

Extents come from ``lseek(SEEK_DATA/SEEK_HOLE)``; on a file system without them the whole
file counts as one extent, which is slower but still correct.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of each stretch of ``fd`` (``size`` bytes long) holding data."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:
            return
        yield start, end - start
        offset = end


def _chunks(fd: int, offset: int, length: int) -> Iterator[tuple[int, bytes]]:
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
        if not chunk:
            raise OSError(errno.EIO, f"unexpected end of file at byte {offset}")
        yield offset, chunk
        offset += len(chunk)


def copy_sparse(source_fd: int, dest: Path, size: int) -> None:
    """Write ``dest`` as a copy of ``source_fd``'s first ``size`` bytes, holes kept as holes.

    Raises:
        OSError: when reading or writing fails.
    """
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for start, length in data_extents(source_fd, size):
            for offset, chunk in _chunks(source_fd, start, length):
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def sparse_digest(path: Path) -> str:
    """``sha256:`` over the file's size and each data extent's offset, length and bytes.

    Reads only the data, so a guest RAM file hashes like a file as long as the pages the
    guest touched. Any change to the bytes, and any stretch that turns from hole into data or
    back, changes the digest.

    Raises:
        OSError: when the file cannot be read.
    """
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        h.update(f"size {size}\n".encode())
        for start, length in data_extents(fd, size):
            h.update(f"extent {start} {length}\n".encode())
            for _, chunk in _chunks(fd, start, length):
                h.update(chunk)
    finally:
        os.close(fd)
    return "sha256:" + h.hexdigest()
