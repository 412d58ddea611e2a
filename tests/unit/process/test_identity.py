"""A process is named by its PID and start ticks: alive, gone, or a stranger with its PID."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyro.process.identity import own_identity, process_alive, start_ticks


def test_this_process_is_alive_under_its_own_name() -> None:
    pid, ticks = own_identity()
    assert pid == os.getpid() and ticks == start_ticks(pid) > 0
    assert process_alive(pid, ticks) and process_alive(pid, None)


def test_other_ticks_are_a_stranger_and_no_pid_is_nobody() -> None:
    pid, ticks = own_identity()
    assert not process_alive(pid, ticks + 1)
    assert not process_alive(None, ticks)


def test_an_exited_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = start_ticks(child.pid)
    assert process_alive(child.pid, ticks) or child.poll() is not None
    child.wait()
    assert not process_alive(child.pid, ticks)


def test_no_such_pid_is_a_lookup_error() -> None:
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
        beyond = int(f.read()) + 1
    with pytest.raises(ProcessLookupError):
        start_ticks(beyond)
    assert not process_alive(beyond, None)


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = start_ticks(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet
    try:
        assert not process_alive(child.pid, ticks)
    finally:
        child.wait()
