"""Keep a VM's serial console log bounded while the guest writes to it.

The VMM writes the guest's console (ttyS0) to its stdout, a pipe; this program reads the
other end and appends to the log file. It is the log's only writer, so it bounds the log
as the bytes arrive: when the next chunk would take the file past ``MAX_BYTES``, it
replaces the file (atomically, by rename) with the boot (the first ``HEAD_BYTES``), a line
saying how many bytes were dropped, and the latest bytes. The file never exceeds
``MAX_BYTES``, whoever reads it and whenever, and what a guest wrote before the VMM exited
(a panic, an agent's last words) is on disk, since nothing is held back in memory.

It exits when the pipe reports end of file: the VMM (and every other holder of the
pipe's write end) is gone. So it lives exactly as long as the VMM's console.

Standard library only, run with ``python -I -S``, so it starts fast (docs/performance.md)
and does not depend on pyro being importable (a persistent VM's keeper outlives the pyro
that started it).
"""

from __future__ import annotations

import os
import sys

# Not from typing: importing it would double this program's start-up (docs/performance.md).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 16
USAGE_EXIT = 2


def marker(dropped: int) -> bytes:
    """The line that stands where bytes were cut out (``dropped`` counts every cut so far)."""
    return f"\n[pyro: serial log trimmed, {dropped} bytes of console output dropped]\n".encode()


class Keeper:
    """Appends to ``path``, keeping it at most ``max_bytes`` long (see the module doc)."""

    def __init__(self, path: str, max_bytes: int, head_bytes: int) -> None:
        if max_bytes < 4096:
            raise ValueError(f"max_bytes must be at least 4096, not {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        self.head_bytes = max(0, min(head_bytes, max_bytes // 4))
        self.dropped = 0
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        if self.size > self.max_bytes:  # written by an older pyro, or a smaller bound now
            self._trim(b"")

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)

    def write(self, data: bytes) -> None:
        """Append ``data``, trimming first when the file would outgrow the bound."""
        if self.size + len(data) > self.max_bytes:
            self._trim(data)
            return
        self._write_all(self.fd, data)
        self.size += len(data)

    def _trim(self, data: bytes) -> None:
        # The stream is the file followed by ``data``; keep its head and its tail.
        total = self.size + len(data)
        head_end = min(self.head_bytes, total)
        tail_start = max(head_end, total - self.max_bytes // 2)
        with open(self.path, "rb") as f:
            head = self._stream(f, data, 0, head_end)
            tail = self._stream(f, data, tail_start, total)
        self.dropped += tail_start - head_end
        content = head + marker(self.dropped) + tail
        tmp = f"{self.path}.trim"
        try:  # noqa: SIM105 - contextlib costs this program a third of its start-up
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            self._write_all(fd, content)
        finally:
            os.close(fd)
        # Readers see the old file or the new one, never a half-written one.
        os.replace(tmp, self.path)
        os.close(self.fd)
        self.fd = self._open()
        self.size = len(content)

    def _stream(self, f: BinaryIO, data: bytes, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of the file (``self.size`` long) followed by ``data``."""
        part = b""
        if start < self.size:
            f.seek(start)
            part = f.read(min(end, self.size) - start)
        return part + data[max(0, start - self.size) : max(0, end - self.size)]

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def close(self) -> None:
        os.close(self.fd)


def main(argv: list[str]) -> int:
    """``console.py LOG MAX_BYTES HEAD_BYTES``, the console on stdin; 2 on bad arguments."""
    if len(argv) != 4 or not argv[2].isdigit() or not argv[3].isdigit():
        sys.stderr.write("usage: console.py LOG MAX_BYTES HEAD_BYTES\n")
        return USAGE_EXIT
    try:
        keeper = Keeper(argv[1], int(argv[2]), int(argv[3]))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"pyro console: cannot keep {argv[1]}: {exc}\n")
        return 1
    try:
        while True:
            try:
                data = os.read(0, CHUNK)
            except InterruptedError:
                continue
            if not data:
                return 0
            keeper.write(data)
    except OSError as exc:  # a full disk: stop logging, but keep draining the VMM's pipe
        sys.stderr.write(f"pyro console: cannot write {argv[1]}: {exc}\n")
        while os.read(0, CHUNK):
            pass
        return 1
    finally:
        keeper.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
