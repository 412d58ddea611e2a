"""Which process is this: a PID together with the time it started, in clock ticks since boot.

A PID alone may be reused by an unrelated process once the first one exits; its start ticks
(``/proc/PID/stat`` field 22) tell the two apart and, unlike psutil's wall-clock
``create_time``, do not move when the clock is stepped. VMM handles (:mod:`pyro.vmm.base`),
the owners of VM records (:mod:`pyro.machines.registry`) and of TAP leases
(:mod:`pyro.net.tap`) are all named this way.
"""

from __future__ import annotations

import os


def start_ticks(pid: int) -> float:
    """When ``pid`` started, in clock ticks since boot.

    Raises:
        ProcessLookupError: no process ``pid`` exists.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError as exc:
        raise ProcessLookupError(f"process {pid} does not exist") from exc
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return float(fields[19])


def own_identity() -> tuple[int, float]:
    """This process's PID and start ticks."""
    pid = os.getpid()
    return pid, start_ticks(pid)


def process_alive(pid: int | None, started: float | None) -> bool:
    """True while ``pid`` runs and is the process that started at ``started`` (a reused PID
    has other ticks); with ``started`` None, while ``pid`` runs at all. Zombies are dead."""
    if pid is None:
        return False
    try:
        if started is not None and start_ticks(pid) != started:
            return False
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
