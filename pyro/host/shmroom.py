"""Room in ``/dev/shm`` reserved across processes, so concurrent users cannot fill it.

``/dev/shm`` is memory: a scratch copy there is fast, but N readers that each find room
for themselves alone fill it together. A reservation is a private folder in ``/dev/shm``
plus a file in ``$PYRO_STATE_DIR/shm-room`` naming it and its byte count, kept under an
exclusive ``flock`` by its holder for as long as it lasts; :func:`reserve` counts the live
ones under a lock of the whole folder, so checking the room and taking it are one step for
every process of this state dir. The kernel drops a dead holder's lock, and the next
:func:`reserve` removes its file and its folder, so a killed reader keeps neither room nor
memory. Anything that goes wrong here means "no room": the caller uses its disk instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

from pyro.paths import private_dir, state_dir

SHM = Path("/dev/shm")
_FOLDER = "shm-room"
_LOCK = ".lock"
_PREFIX = "pyro-room-"
#: The longest a reservation waits for the ledger's lock (held only for a look at the
#: ledger) before it goes without room.
LOCK_WAIT_S = 2.0
_POLL_S = 0.005


class Reservation:
    """Room held in ``/dev/shm`` until :meth:`release` (or this process ends): ``folder``,
    private (0700) and empty at first, is where the holder writes."""

    def __init__(self, fd: int, path: Path, folder: Path, size: int) -> None:
        self._fd: int | None = fd
        self.path = path
        self.folder = folder
        self.size = size

    def release(self) -> None:
        """Remove the folder and give the room back; idempotent."""
        if self._fd is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def reserve(size: int) -> Reservation | None:
    """Reserve ``size`` bytes of ``/dev/shm`` (and a new folder there) when its free room,
    less what live reservations hold, is more than that; None when it is not (or the ledger
    cannot be used)."""
    try:
        folder = state_dir() / _FOLDER
        private_dir(folder.parent)
        private_dir(folder)
        lock = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        if not _locked(lock):
            return None
        fs = os.statvfs(SHM)
        if fs.f_bavail * fs.f_frsize - _held(folder) <= size:
            return None
        room = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=SHM))  # 0700
        path = folder / room.name
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
        except OSError:
            room.rmdir()
            raise
        reservation = Reservation(fd, path, room, size)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, str(size).encode())
        except OSError:
            reservation.release()
            raise
        return reservation
    except OSError:
        return None
    finally:
        os.close(lock)  # drops the folder's lock


def _locked(fd: int) -> bool:
    """Take ``fd``'s lock within :data:`LOCK_WAIT_S` (its holder may be stopped).

    Raises:
        OSError: the file cannot be locked.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)


def _held(folder: Path) -> int:
    """Bytes the live reservations in ``folder`` hold; dead ones' files are removed.

    Raises:
        OSError: the folder cannot be read.
    """
    held = 0
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a live reservation
                text = os.read(fd, 32).decode("ascii", "replace")
                held += int(text) if text.isdigit() else 0
            else:  # its holder is gone: so go its folder and its file
                if entry.name.startswith(_PREFIX) and "/" not in entry.name:
                    shutil.rmtree(SHM / entry.name, ignore_errors=True)
                os.unlink(entry.path)
        finally:
            os.close(fd)
    return held
