"""A guest agent that lies: stat/list_dir/get_file answers scripted byte for byte.

Entries are built from raw TLV frames and decoded by pyro's own ``to_stat``, so a name's
bytes go through the same decoding as a real agent's. Each answer can be a lie a real
agent never tells: names no file can have, sizes that do not match the contents, a listing
that changes between two calls, a download that ignores ``max_bytes`` and never ends.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pyro.errors import GuestPathError, LimitError
from pyro.guest.protocol import Frame, FrameType, Tag, TlvValue, encode_tlv
from pyro.guest.results import GuestStat, to_stat

Contents = bytes | Callable[[], Iterator[bytes]]
#: Where an "endless" download stops, so that code without a cap still ends in a test.
ENDLESS_STOP = 64 << 20


def raw_entry(
    name: bytes, kind: str = "f", *, mode: int = 0o644, size: int = 3, link: bytes | None = None
) -> GuestStat:
    """A listing entry as the agent would send it, decoded by pyro."""
    items: list[tuple[Tag, TlvValue]] = [
        (Tag.NAME, name),
        (Tag.KIND, kind.encode()),
        (Tag.MODE, mode),
        (Tag.SIZE, size),
        (Tag.MTIME_NS, 0),
        (Tag.UID, 0),
        (Tag.GID, 0),
    ]
    if link is not None:
        items.append((Tag.LINK, link))
    return to_stat(Frame(FrameType.ENTRY, 1, encode_tlv(items)))


def endless(chunk: bytes = b"\0" * (256 << 10), stop: int = ENDLESS_STOP) -> Contents:
    """A download that goes on (up to ``stop`` bytes) whatever ``max_bytes`` says."""

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < stop:
            yield chunk
            sent += len(chunk)

    return chunks


class LyingAgent:
    """Implements stat, list_dir and get_file from scripted answers."""

    def __init__(self, *, honour_max_bytes: bool = False) -> None:
        self.listings: dict[str, list[GuestStat]] = {}
        self.tops: dict[str, GuestStat] = {}
        self.contents: dict[str, Contents] = {}
        self.reads: list[str] = []
        self.honour_max_bytes = honour_max_bytes

    def folder(self, path: str, *entries: GuestStat) -> list[GuestStat]:
        """Script the listing of ``path``; returns it (names decoded as pyro sees them)."""
        self.listings[path] = list(entries)
        return self.listings[path]

    def stat(self, path: str) -> GuestStat:
        if path in self.tops:
            return self.tops[path]
        name = posixpath.basename(path).encode()
        if path in self.listings:
            return raw_entry(name, "d", mode=0o755, size=4096)
        if path in self.contents:
            data = self.contents[path]
            return raw_entry(name, "f", size=len(data) if isinstance(data, bytes) else 3)
        raise GuestPathError(f"cannot get the stat of {path}: No such file or directory")

    def list_dir(self, path: str) -> list[GuestStat]:
        if path not in self.listings:
            raise GuestPathError(f"cannot get the listing of {path}: Not a directory")
        return list(self.listings[path])

    def get_file(self, path: str, dst: BinaryIO, *, max_bytes: int | None = None) -> int:
        self.reads.append(path)
        data = self.contents.get(path, b"abc")
        got = 0
        for chunk in [data] if isinstance(data, bytes) else data():
            if self.honour_max_bytes and max_bytes is not None and got + len(chunk) > max_bytes:
                raise LimitError(f"guest file {path} is larger than {max_bytes} bytes")
            dst.write(chunk)
            got += len(chunk)
        return got
