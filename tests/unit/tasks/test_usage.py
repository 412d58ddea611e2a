"""Parsing the guest's usage probe (pyro.tasks.usage.parse): real output and hostile lines."""

from __future__ import annotations

import os

from pyro.tasks.usage import TaskUsage, host_usage, parse

REAL = """cpu  100 0 50 800 50 0 0 0 0 0
cpu0 100 0 50 800 50 0 0 0 0 0
intr 1234
MemTotal:         506052 kB
MemFree:          480000 kB
MemAvailable:     483100 kB
/dev/vda          996780    180892    764688  20% /
"""


def test_the_probe_output_of_a_guest_parses() -> None:
    usage = TaskUsage()
    parse(REAL, usage)
    assert usage.guest_cpu_busy_percent == 15.0  # (1000 - 850) / 1000
    assert usage.guest_memory_total_bytes == 506052 * 1024
    assert usage.guest_memory_used_bytes == (506052 - 483100) * 1024
    assert (usage.guest_disk_total_bytes, usage.guest_disk_used_bytes) == (
        996780 * 1024,
        180892 * 1024,
    )


def test_odd_lines_leave_figures_unset_rather_than_wrong() -> None:
    usage = TaskUsage()
    parse("cpu x y z w\nMemTotal: lots kB\n\x00\x1b[2J\n" + "9" * 5000 + "\n", usage)
    assert usage == TaskUsage()


def test_host_figures_of_a_live_and_a_gone_process() -> None:
    mine = host_usage(os.getpid())
    assert mine.vmm_cpu_seconds is not None and (mine.vmm_memory_bytes or 0) > 0
    assert host_usage(None) == TaskUsage()
