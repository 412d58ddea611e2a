"""Start slots: how many runs may be starting at once (one per CPU, per state dir).

Starting a run is CPU work from end to end: Python imports pyro, the planner runs, the
VMM starts and the guest resumes or boots. Many starts at once on a few CPUs each cost
more CPU than one at a time, so together they finish later (figures: docs/performance.md,
"Start slots"). So a run takes a *start slot* before it starts and gives it back once its
guest is ready, before its first command: a command of any length never holds one, and
neither does a pull or a build.

A slot is an exclusive ``flock`` on one of N files in ``$PYRO_STATE_DIR/start-slots``.
The kernel drops the lock when its holder exits, however it ends, so a killed run never
keeps one. N is the number of CPUs this process may run on; ``PYRO_START_SLOTS``
overrides it, and ``0`` turns slots off. A run waits at most :data:`WAIT_S` for a slot and
then starts without one, so a stopped or stuck holder delays other runs by that much at
most and never blocks them. Slots are an optimisation: when the folder cannot be used,
runs start without them.

The ``pyro run``/``apply``/``demo`` commands take a slot for the whole process before
they import the run machinery (:func:`take_for_process`); the executor's boot step uses
that slot, or takes one of its own in a long-lived process (:func:`start_slot`).
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pyro.errors import UsageError
from pyro.paths import private_dir, state_dir

SLOTS_ENV = "PYRO_START_SLOTS"
#: The most slots ``PYRO_START_SLOTS`` may ask for (each is a file a start opens).
MAX_SLOTS = 1024
#: The longest a start waits for a slot before it goes ahead without one.
WAIT_S = 2.0
#: How often a waiting start looks for a free slot.
POLL_S = 0.005


class StartSlot:
    """One slot taken (``held``), or a start that goes ahead without one."""

    def __init__(self, fd: int | None, *, waited_s: float = 0.0, slots: int = 0) -> None:
        self._fd = fd
        self.waited_s = waited_s
        """How long the start waited for it (the whole wait when none came free)."""
        self.slots = slots
        """How many slots there are (0: slots are off or unusable)."""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the slot back (closing the file drops the lock); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def slot_count() -> int:
    """``$PYRO_START_SLOTS``, else the number of CPUs this process may run on.

    Raises:
        UsageError: the variable is set to something other than a whole number ≥ 0.
    """
    value = os.environ.get(SLOTS_ENV, "").strip()
    if not value:
        return len(os.sched_getaffinity(0)) or 1
    if not (value.isascii() and value.isdigit() and int(value) <= MAX_SLOTS):
        raise UsageError(
            f"{SLOTS_ENV}={value!r} is not a number of start slots",
            f"set {SLOTS_ENV} to a whole number up to {MAX_SLOTS} (0 turns start slots "
            "off), or unset it to have one slot per CPU",
        )
    return int(value)


def acquire(
    *, slots: int | None = None, directory: Path | None = None, wait_s: float = WAIT_S
) -> StartSlot:
    """Take a free start slot, waiting up to ``wait_s`` for one.

    Returns a slot that is not ``held`` when slots are off, when the folder cannot be
    used, or when none came free in time.

    Raises:
        UsageError: ``$PYRO_START_SLOTS`` is not a whole number.
    """
    count = slot_count() if slots is None else slots
    if count <= 0:
        return StartSlot(None)
    folder = directory or state_dir() / "start-slots"
    fds: list[int] = []
    try:
        if directory is None:
            private_dir(folder.parent)  # the state folder itself: owner-only (0700)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for index in range(count):
            fds.append(os.open(folder / str(index), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError:
        for fd in fds:
            os.close(fd)
        return StartSlot(None)
    # Each start looks at the slots in its own order, so waiters do not all try slot 0.
    first = os.getpid() % count
    order = fds[first:] + fds[:first]
    begun = time.monotonic()
    chosen = None
    try:
        while True:
            chosen = next((fd for fd in order if _try_lock(fd)), None)
            if chosen is not None or time.monotonic() - begun >= wait_s:
                break
            time.sleep(POLL_S)
    except OSError:  # a filesystem without flock (ENOLCK): start without a slot
        return StartSlot(None)
    finally:  # however the wait ends (Ctrl-C too), only the chosen slot's file stays open
        for fd in fds:
            if fd != chosen:
                os.close(fd)
    return StartSlot(chosen, waited_s=time.monotonic() - begun, slots=count)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


_lock = _thread.allocate_lock()
_process_slot: StartSlot | None = None


def take_for_process() -> None:
    """Take a slot for this process's run, before it imports what the run needs.

    Never raises: with ``$PYRO_START_SLOTS`` invalid, the run's boot step reports it.
    """
    global _process_slot
    if _process_slot is not None:
        return
    try:
        slot = acquire()
    except UsageError:
        return
    with _lock:
        _process_slot = slot


def release_process_slot() -> None:
    """Give back the slot :func:`take_for_process` took, if it is still held."""
    global _process_slot
    with _lock:
        slot, _process_slot = _process_slot, None
    if slot is not None:
        slot.release()


@contextlib.contextmanager
def start_slot() -> Iterator[StartSlot]:
    """Hold a start slot for the block: the process's own (see :func:`take_for_process`)
    if it still has it, else a new one."""
    global _process_slot
    with _lock:
        slot, _process_slot = _process_slot, None
    if slot is None:
        slot = acquire()
    try:
        yield slot
    finally:
        slot.release()
