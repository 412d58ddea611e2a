"""Reading a task's disk without booting it: no root, no mount on the host.

``qemu-img convert`` writes the task's qcow2 chain (its current state, or one of its
internal snapshots) to a private temporary raw image, ``e2fsck -E journal_only`` replays
the ext4 journal in that copy (a disk saved from a live guest holds committed transactions
not yet at their final place), and ``debugfs`` (e2fsprogs, reads images unprivileged)
lists folders and dumps files by inode number.

Everything read from the image is as hostile as what a guest agent says: :class:`DiskReader`
answers ``stat``/``list_dir``/``get_file`` as :class:`pyro.guest.client.AgentClient` does,
so exports go through the same writer and checks (:mod:`pyro.machines.copyout`). A listing
line that does not parse exactly (a name holding ``/`` or a newline) is an error, names are
kept as bytes (lone surrogates, like the agent's), symlinks are never followed, and a file
is dumped only after its size passed the caller's cap.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pyro import paths
from pyro.errors import GuestPathError, LimitError, VMMError
from pyro.guest.results import GuestStat
from pyro.host import shmroom

#: ``ls -p`` prints ``/INODE/MODE/UID/GID/NAME/SIZE/`` (SIZE empty for folders).
_LINE = re.compile(rb"^/(\d+)/([0-7]{1,7})/(\d+)/(\d+)/([^/]*)/(\d*)/$")
_FAST_LINK = re.compile(rb'^Fast link dest: "(.*)"$', re.MULTILINE)
_KINDS = {0o040000: "d", 0o100000: "f", 0o120000: "l", 0o020000: "c", 0o060000: "b"}
_KINDS |= {0o010000: "p", 0o140000: "s"}
ROOT_INODE = 2
TOOL_TIMEOUT_S = 120.0
#: The most bytes one tool run may print (a listing of MAX_LIST_ENTRIES long names fits).
MAX_TOOL_OUTPUT = 64 << 20
#: Listings longer than this are refused (the agent's cap, pyro.guest.client).
MAX_LIST_ENTRIES = 100_000


def _tool(name: str, package: str) -> str:
    """Raises: VMMError: the tool is missing."""
    exe = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if exe is None:
        raise VMMError(
            f"{name} is not installed: reading a stopped task's disk needs it",
            f"install it with 'apt-get install {package}', or start the task",
        )
    return exe


def _run(
    argv: list[str],
    what: str,
    ok: tuple[int, ...] = (0,),
    cwd: Path | None = None,
) -> bytes:
    """The tool's output, read as it prints: at most :data:`MAX_TOOL_OUTPUT` bytes and
    :data:`TOOL_TIMEOUT_S` seconds (a crafted disk can make debugfs print without end).

    Raises:
        VMMError: the tool failed or hung.  LimitError: it printed too much.
    """
    limit = MAX_TOOL_OUTPUT
    deadline = time.monotonic() + TOOL_TIMEOUT_S
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, out)
            selector.register(proc.stderr, selectors.EVENT_READ, err)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise VMMError(f"{what} timed out")
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.data is err:
                        err[:] = (err + chunk)[-(1 << 16) :]  # its last lines are enough
                    else:
                        out += chunk
                        if len(out) > limit:
                            raise LimitError(
                                f"{what} printed more than {limit} bytes",
                                "the guest wrote a broken or hostile file system; boot the "
                                "task to read it",
                            )
        returncode = proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise VMMError(f"{what} timed out") from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if returncode not in ok:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise VMMError(
            f"{what} failed: {lines[-1] if lines else returncode}",
            "check free disk space; 'pyro task status ID' shows the task",
        )
    return bytes(out)


@contextlib.contextmanager
def opened(disk: Path, *, snapshot: str | None = None) -> Iterator[DiskReader]:
    """A reader of the qcow2 ``disk`` (its snapshot ``snapshot`` if given), through a private
    temporary raw copy removed on exit: in ``/dev/shm`` when room for it is reserved there
    (:mod:`pyro.host.shmroom`, so concurrent readers never fill it together), else next
    to the disk. The disk must
    not be written meanwhile unless ``snapshot`` is given (a snapshot is never written).

    Raises:
        VMMError: qemu-img, e2fsck or debugfs is missing or fails.
    """
    qemu_img = _tool("qemu-img", "qemu-utils")
    e2fsck = _tool("e2fsck", "e2fsprogs")
    debugfs = _tool("debugfs", "e2fsprogs")
    # The raw copy, and one dumped file at most as large: in /dev/shm when it has room.
    room = shmroom.reserve(2 * _virtual_size(disk))
    work: Path | None = None
    try:
        work = room.folder if room else Path(tempfile.mkdtemp(prefix="pyro-disk-", dir=disk.parent))
        paths.private_dir(work, create=False)
        image = work / "disk.raw"
        argv = [qemu_img, "convert", "-U", "-f", "qcow2", "-O", "raw"]
        if snapshot is not None:
            argv += ["-l", f"snapshot.name={snapshot}"]
        _run([*argv, str(disk), str(image)], f"copying the disk {disk.name}")
        # 0: clean, 1: the journal was replayed (or errors fixed); 2+: needs a real check.
        _run([e2fsck, "-E", "journal_only", "-p", str(image)], "replaying its journal", (0, 1))
        yield DiskReader(image, work, debugfs)
    finally:
        if room is not None:
            room.release()  # its folder with it
        elif work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _virtual_size(disk: Path) -> int:
    with contextlib.suppress(OSError, ValueError), disk.open("rb") as f:
        header = f.read(32)
        if header[:4] == b"QFI\xfb":
            return int.from_bytes(header[24:32], "big")
    return 1 << 40  # unknown: never in memory


class DiskReader:
    """``stat``/``list_dir``/``get_file`` over an ext4 image, as the guest agent answers them
    (lstat semantics: a path through a symlink is refused, never followed)."""

    def __init__(self, image: Path, work: Path, debugfs: str) -> None:
        self.image = image
        self.work = work
        self.debugfs = debugfs
        self._listings: dict[int, list[tuple[int, GuestStat]]] = {}
        self._dumps = 0

    def _request(self, request: str) -> bytes:
        argv = [self.debugfs, "-R", request, self.image.name]
        return _run(argv, f"reading the disk ({request})", cwd=self.work)

    def _list(self, inode: int, shown: str) -> list[tuple[int, GuestStat]]:
        """(inode, stat) of each entry of folder ``inode`` but . and ..

        Raises:
            GuestPathError: a line does not parse (a hostile name), or too many entries.
        """
        if inode in self._listings:
            return self._listings[inode]
        out: list[tuple[int, GuestStat]] = []
        for line in self._request(f"ls -p <{inode}>").split(b"\n"):
            if not line:
                continue
            match = _LINE.match(line)
            if match is None:
                raise GuestPathError(
                    f"the disk lists an entry of {shown!r} that cannot be read: {line[:80]!r}",
                    "the guest wrote a broken or hostile file system; boot the task to read it",
                )
            number, mode, uid, gid, raw, size = match.groups()
            name = raw.decode("utf-8", "surrogateescape")
            if name in (".", ".."):
                continue
            mode_bits = int(mode, 8)
            out.append(
                (
                    int(number),
                    GuestStat(
                        name=name,
                        kind=_KINDS.get(mode_bits & 0o170000, "?"),
                        mode=mode_bits & 0o7777,
                        size=int(size or 0),
                        mtime_ns=0,
                        uid=int(uid),
                        gid=int(gid),
                        link_target=None,
                    ),
                )
            )
            if len(out) > MAX_LIST_ENTRIES:
                raise LimitError(f"{shown} has more than {MAX_LIST_ENTRIES} entries")
        out.sort(key=lambda item: item[1].name)
        self._listings[inode] = out
        return out

    def _resolve(self, path: str) -> tuple[int, GuestStat]:
        """The inode and stat of an absolute path, each component looked up by name.

        Raises:
            GuestPathError: not absolute, missing, or through a symlink or a non-folder.
        """
        if not path.startswith("/"):
            raise GuestPathError(f"guest path {path!r} is not absolute")
        inode = ROOT_INODE
        info = GuestStat("/", "d", 0o755, 0, 0, 0, 0, None)
        walked = ""
        for part in [p for p in path.split("/") if p and p != "."]:
            if part == "..":
                raise GuestPathError(f"guest path {path!r} holds '..'", "give a plain path")
            if info.kind != "d":
                what = "a symlink" if info.kind == "l" else "not a folder"
                raise GuestPathError(
                    f"{walked or '/'} is {what} on the disk (offline reads follow no links)",
                    "give the path it points to, or start the task",
                )
            found = [item for item in self._list(inode, walked or "/") if item[1].name == part]
            walked += "/" + part
            if not found:
                raise GuestPathError(f"{walked}: No such file or directory")
            inode, info = found[0]
        if info.kind == "l":
            info = self._with_target(inode, info)
        return inode, info

    def _with_target(self, inode: int, info: GuestStat) -> GuestStat:
        """``info`` with its link target (a fast link's, from ``stat``; else its data)."""
        target: bytes | None = None
        match = _FAST_LINK.search(self._request(f"stat <{inode}>"))
        if match is not None:
            target = match.group(1)
        elif 0 < info.size < 4096:
            dump = self._dump(inode)
            target = dump.read_bytes()
            dump.unlink()
        if target is None or len(target) != info.size or b"\0" in target:
            target = b""  # unreadable: recreated nowhere (an export skips it)
        return GuestStat(
            info.name,
            info.kind,
            info.mode,
            info.size,
            info.mtime_ns,
            info.uid,
            info.gid,
            target.decode("utf-8", "surrogateescape"),
        )

    def _dump(self, inode: int) -> Path:
        self._dumps += 1
        dest = self.work / f"dump-{self._dumps}"
        self._request(f"dump <{inode}> {dest.name}")  # relative: debugfs splits at spaces
        if not dest.is_file():
            raise GuestPathError(f"inode {inode} of the disk cannot be read")
        return dest

    # -- the AgentClient calls copy-out and listings use ---------------------------------

    def stat(self, guest_path: str) -> GuestStat:
        """Raises: GuestPathError: no such path (or through a symlink)."""
        return self._resolve(guest_path)[1]

    def list_dir(self, guest_path: str) -> list[GuestStat]:
        """Raises: GuestPathError: no such folder."""
        inode, info = self._resolve(guest_path)
        if info.kind != "d":
            raise GuestPathError(f"{guest_path}: Not a directory")
        entries = self._list(inode, guest_path)
        return [self._with_target(i, s) if s.kind == "l" else s for i, s in entries]

    def get_file(self, guest_path: str, dst: BinaryIO, *, max_bytes: int | None = None) -> int:
        """Copy a regular file into ``dst``; returns its size.

        Raises:
            GuestPathError: not a regular file.  LimitError: larger than ``max_bytes``
                (checked before a byte is read).
        """
        inode, info = self._resolve(guest_path)
        if info.kind == "l":
            raise GuestPathError(
                f"{guest_path} is a symlink to {info.link_target!r} on the disk of a stopped task",
                "read the path it points to (offline reads follow no links), or start the task",
            )
        if info.kind != "f":
            raise GuestPathError(f"{guest_path}: not a regular file")
        if max_bytes is not None and info.size > max_bytes:
            raise LimitError(
                f"guest file {guest_path} is larger than {max_bytes} bytes",
                "raise the size limit or copy a smaller file",
            )
        dump = self._dump(inode)
        try:
            copied = 0
            with dump.open("rb") as src:
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > info.size:  # never more than the listing said
                        raise GuestPathError(f"{guest_path} changed size on the disk")
                    dst.write(chunk)
            return copied
        finally:
            dump.unlink(missing_ok=True)
