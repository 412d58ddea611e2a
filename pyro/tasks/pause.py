"""Pausing a task with its memory: save RAM + device state + disk, end the VMM, resume later.

Built on the warm-start machinery (:mod:`pyro.vmm.qemu_snapshot`): QEMU migrates the device
state to a file and the guest RAM, kept in a memfd QEMU maps shared, is copied out of the
stream into the task's own ``memory.ram``. A resumed guest maps that file shared, so it goes
on using it as its RAM and the next pause copies nothing. The disk is the task's own overlay,
flushed by the migration and left in place.

Files in the task's folder (they go with ``task delete``; ``task stop`` discards them):

``paused.state``  QEMU's device state (present only while paused)
``memory.ram``    the guest RAM (sparse): the paused memory, or the resumed guest's live RAM
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from pyro.errors import StateError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.machines.registry import VMRegistry

MEMORY = "memory.ram"
STATE = "paused.state"
#: A save writes only device state and touched RAM pages; under TCG it takes seconds.
SAVE_TIMEOUT_S = 120.0
#: A resumed guest answers its hello at once; a slow host gets some slack.
RESUME_TIMEOUT_S = 60.0


class PauseInfo(BaseModel):
    """When and how a task was paused."""

    paused_at: float
    duration_ms: int
    memory_bytes: int
    """What the saved RAM takes on the host's disk (only the pages the guest touched)."""


def save(registry: VMRegistry, task_id: str) -> PauseInfo:
    """Save the running task's memory, devices and disk and end its VMM.

    Raises:
        StateError: it is not running, or runs without shared RAM (an older pyro booted it).
        VMMError: the save failed (the task runs on).
    """
    from pyro.errors import VMMError

    begun = time.monotonic()
    task_dir = registry.dir(task_id)
    try:
        registry.pause(task_id, task_dir / STATE, MEMORY, timeout=SAVE_TIMEOUT_S)
    except VMMError as exc:
        if "no shared guest RAM" in exc.summary:
            raise StateError(
                f"task {task_id} was booted without the memory layout a pause needs",
                f"stop and start it once ('pyro task stop {task_id}'; 'pyro task start "
                f"{task_id}'), then pause it",
            ) from exc
        raise
    return PauseInfo(
        paused_at=time.time(),
        duration_ms=int((time.monotonic() - begun) * 1000),
        memory_bytes=memory_bytes(task_dir),
    )


def resume(
    registry: VMRegistry,
    task_id: str,
    *,
    data_disk: Path | None,
    spare_disk: Path | None,
    hostname: str | None,
) -> AgentClient:
    """Start the paused task's VM from its saved state; its hello resets the guest's clock
    and reseeds its RNG. The saved state file goes once the guest answered.

    Raises:
        StateError: the saved state is missing (the task must be stopped to discard it).
        BootError: the guest did not answer (still paused: retry, or stop to discard).
    """
    task_dir = registry.dir(task_id)
    state = task_dir / STATE
    if not state.is_file() or not (task_dir / MEMORY).is_file():
        raise StateError(
            f"task {task_id} is paused but its saved memory is missing",
            f"'pyro task stop {task_id}' discards the pause; the next start boots from disk",
        )
    _, client = registry.start(
        task_id,
        data_disk=data_disk,
        spare_disk=spare_disk,
        resume=(state, MEMORY),
        hostname=hostname,
        boot_timeout=RESUME_TIMEOUT_S,
    )
    with contextlib.suppress(OSError):
        state.unlink()
    return client


def discard(task_dir: Path) -> None:
    """Remove the saved state and memory (the VMM must be gone)."""
    for name in (STATE, MEMORY):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(task_dir / name)


def memory_bytes(task_dir: Path) -> int:
    """What ``memory.ram`` takes on disk (0 without one)."""
    try:
        return (task_dir / MEMORY).stat().st_blocks * 512
    except OSError:
        return 0
