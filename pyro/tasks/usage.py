"""What a running task costs: the VMM's CPU time and memory on the host, and the guest's own
view of its CPU, memory and disk (``/proc/stat``, ``/proc/meminfo``, ``df`` of the
workspace, read by one short command through the agent).

The guest's figures are guest data: parsed strictly and bounded, never trusted for
anything but display. A task busy with another command is not waited for: its guest
figures are left out and ``note`` says why.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from pyro.errors import PyroError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

#: One command, shell-free but for ``sh -c`` itself; its output is capped.
PROBE = 'cat /proc/stat /proc/meminfo; df -Pk "$1" 2>/dev/null | tail -n 1'
PROBE_TIMEOUT_S = 10.0
PROBE_CAP = 16384


class TaskUsage(BaseModel):
    """Resource use of a running task."""

    vmm_cpu_seconds: float | None = Field(None, description="Host CPU seconds its VMM used.")
    vmm_memory_bytes: int | None = Field(None, description="Host RAM its VMM holds (RSS).")
    guest_cpu_busy_percent: float | None = Field(
        None, description="Guest CPU busy since boot, % of all its vCPUs."
    )
    guest_memory_total_bytes: int | None = Field(None, description="Guest RAM, bytes.")
    guest_memory_used_bytes: int | None = Field(
        None, description="Guest RAM in use (total - available), bytes."
    )
    guest_disk_total_bytes: int | None = Field(None, description="Workspace file system size.")
    guest_disk_used_bytes: int | None = Field(None, description="Workspace file system used.")
    note: str = Field("", description="Why some figures are missing.")


def host_usage(pid: int | None) -> TaskUsage:
    """The VMM's CPU time and RSS (psutil); empty when the process is gone."""
    usage = TaskUsage()
    if pid is None:
        return usage
    import psutil

    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        times = process.cpu_times()
        usage.vmm_cpu_seconds = round(times.user + times.system, 3)
        usage.vmm_memory_bytes = int(process.memory_info().rss)
    return usage


def guest_usage(client: AgentClient, workspace: str, usage: TaskUsage) -> None:
    """Fill ``usage``'s guest figures from one probe command (left None when unparsable)."""
    try:
        result = client.exec(
            ["sh", "-c", PROBE, "probe", workspace],
            timeout_s=PROBE_TIMEOUT_S,
            stdout_cap=PROBE_CAP,
            stderr_cap=1024,
            uid=0,  # pyro's own probe, whatever user an image environment runs commands as
            gid=0,
        )
    except PyroError as exc:
        usage.note = f"the guest did not answer: {exc.summary}"
        return
    parse(result.stdout.decode("ascii", "replace"), usage)


def parse(text: str, usage: TaskUsage) -> None:
    """Fill ``usage`` from the probe's output (a strict reading: odd lines are skipped)."""
    meminfo: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "cpu" and len(words) >= 5 and all(w.isdigit() for w in words[1:]):
            ticks = [int(w) for w in words[1:]]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            total = sum(ticks[:8])
            if total > 0:
                usage.guest_cpu_busy_percent = round(100.0 * (total - idle) / total, 1)
        elif len(words) == 3 and words[0].endswith(":") and words[2] == "kB" and words[1].isdigit():
            meminfo[words[0][:-1]] = int(words[1]) * 1024
        elif (
            len(words) == 6 and words[1].isdigit() and words[2].isdigit() and words[4].endswith("%")
        ):
            usage.guest_disk_total_bytes = int(words[1]) * 1024
            usage.guest_disk_used_bytes = int(words[2]) * 1024
    if "MemTotal" in meminfo and "MemAvailable" in meminfo:
        usage.guest_memory_total_bytes = meminfo["MemTotal"]
        usage.guest_memory_used_bytes = max(0, meminfo["MemTotal"] - meminfo["MemAvailable"])
