"""Room reserved in /dev/shm across processes (pyro.host.shmroom), against a fake budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro.host import shmroom


@pytest.fixture
def budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """/dev/shm seen with 100 MiB free; the ledger in a fresh state dir."""
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    real = os.statvfs
    free = 100 << 20

    def statvfs(path: object) -> os.statvfs_result:
        result = real(path)  # type: ignore[arg-type]
        if str(path) != str(shmroom.SHM):
            return result
        fields = list(result)
        fields[4] = free // result.f_frsize
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", statvfs)
    return free


def test_reservations_add_up_and_come_back(budget: int) -> None:
    first = shmroom.reserve(40 << 20)
    second = shmroom.reserve(40 << 20)
    assert first is not None and second is not None
    assert shmroom.reserve(40 << 20) is None  # 100 - 80 MiB left
    first.release()
    first.release()  # idempotent
    third = shmroom.reserve(40 << 20)
    assert third is not None
    second.release()
    third.release()


def test_a_killed_holder_keeps_no_room(budget: int) -> None:
    pid = os.fork()
    if pid == 0:  # the child reserves nearly all and dies without releasing
        os._exit(0 if shmroom.reserve(90 << 20) is not None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger = Path(os.environ["PYRO_STATE_DIR"]) / "shm-room"
    (left,) = ledger.glob("pyro-room-*")  # its file stays, its lock went with it
    assert (shmroom.SHM / left.name).is_dir()
    room = shmroom.reserve(90 << 20)
    assert room is not None
    assert not (shmroom.SHM / left.name).exists()  # the dead holder's folder went too
    (room.folder / "data").write_bytes(b"x")
    room.release()
    assert list(ledger.glob("pyro-room-*")) == []
    assert not room.folder.exists()


def test_an_unusable_ledger_means_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "file"))
    assert shmroom.reserve(1) is None


def test_a_stuck_lock_holder_means_no_room_not_a_wait(budget: int) -> None:
    """A holder of the ledger's lock that never lets go (stopped with Ctrl-Z, say): a
    reservation gives up after a short wait and the caller uses its disk."""
    import fcntl
    import time

    first = shmroom.reserve(1)  # makes the ledger
    assert first is not None
    first.release()
    lock = os.open(Path(os.environ["PYRO_STATE_DIR"]) / "shm-room" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        begun = time.monotonic()
        assert shmroom.reserve(1) is None
        assert time.monotonic() - begun < shmroom.LOCK_WAIT_S + 1
    finally:
        os.close(lock)
    room = shmroom.reserve(1)
    assert room is not None
    room.release()
