"""Task state on real guests: pause/resume with memory, fork.

The pause tests check process state, not files: a background ``sleep 1000`` keeps its pid
and a counter in a guest process keeps counting across the pause, and the CLI steps run
as separate pyro processes (a paused task outlives the process that paused it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import StateError
from pyro.sdk import Pyro
from tests.e2e.test_task import ok, pyro

pytestmark = pytest.mark.guest

ENV = "debian:12"
#: A counter process and a sleeper, both detached from the exec that starts them; prints
#: the sleeper's pid.
BACKGROUND = (
    "setsid nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'"
    " >/dev/null 2>&1 & setsid nohup sleep 1000 >/dev/null 2>&1 & echo $!"
)


@pytest.fixture
def sdk(guest_install: Any, pyro_state: Path) -> Iterator[Pyro]:
    yield Pyro(state_dir=pyro_state)


def _cmdline(pyro_: Pyro, task_id: str, pid: str) -> str:
    out = pyro_.exec_task(task_id, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    return out.stdout.strip()


def _count(pyro_: Pyro, task_id: str) -> int:
    return int(pyro_.read_task_file(task_id, "/tmp/count").decode().strip() or 0)


def test_pause_and_resume_keep_processes_memory_and_set_the_clock(
    guest_install: Any, pyro_state: Path
) -> None:
    task_id = ok("task", "create", ENV, "--id-only").stdout.strip()
    try:
        pid = ok("task", "exec", task_id, "--", BACKGROUND).stdout.split()[0]
        sdk = Pyro(state_dir=pyro_state)
        time.sleep(0.6)
        before = _count(sdk, task_id)

        paused = json.loads(ok("task", "pause", task_id, "--json").stdout)["task"]
        assert paused["state"] == "paused"
        assert paused["pid"] is None and paused["memory_file_bytes"] > 1 << 20
        folder = pyro_state / "vms" / task_id
        assert (folder / "memory.ram").is_file() and (folder / "paused.state").is_file()
        listed = json.loads(ok("task", "list", "--json").stdout)["tasks"]
        assert [t["state"] for t in listed if t["id"] == task_id] == ["paused"]
        time.sleep(2)  # the guest clock must not lag behind by the pause

        resumed = json.loads(ok("task", "resume", task_id, "--json").stdout)["task"]
        assert resumed["state"] == "running" and resumed["pid"]
        assert not (folder / "paused.state").exists()
        assert _cmdline(sdk, task_id, pid) == "sleep 1000"
        first = _count(sdk, task_id)
        assert first >= before
        time.sleep(1)
        assert _count(sdk, task_id) > first  # the counter runs on
        guest_now = float(sdk.exec_task(task_id, "date +%s.%N").stdout)
        assert abs(guest_now - time.time()) < 2.0
    finally:
        pyro("task", "delete", task_id)
    assert not (pyro_state / "vms" / task_id).exists()


def test_exec_resumes_a_paused_task_and_stop_discards_its_memory(sdk: Pyro) -> None:
    task = sdk.create_task(ENV)
    try:
        pid = sdk.exec_task(task.id, BACKGROUND).stdout.split()[0]
        sdk.pause_task(task.id)
        assert sdk.pause_task(task.id).state == "paused"  # pausing again changes nothing
        assert _cmdline(sdk, task.id, pid) == "sleep 1000"  # exec resumed it
        assert sdk.status_task(task.id).state == "running"

        sdk.exec_task(task.id, "echo kept > /workspace/f")
        sdk.pause_task(task.id)  # a second pause of a resumed guest
        folder = sdk.tasks.dir(task.id)
        stopped = sdk.stop_task(task.id)
        assert stopped.state == "stopped" and stopped.memory_file_bytes == 0
        assert not (folder / "memory.ram").exists() and not (folder / "paused.state").exists()
        with pytest.raises(StateError, match="stopped"):
            sdk.pause_task(task.id)
        # A cold boot from the disk: the files are there, the processes are not.
        assert sdk.read_task_file(task.id, "/workspace/f") == b"kept\n"
        gone = sdk.exec_task(task.id, f"test -e /proc/{pid}/cmdline && cat /proc/{pid}/cmdline")
        assert "sleep" not in gone.stdout
    finally:
        sdk.delete_task(task.id)


def test_the_idle_timeout_pauses_when_asked(sdk: Pyro) -> None:
    task = sdk.create_task(ENV, idle_timeout_seconds=1, idle_action="pause")
    try:
        pid = sdk.exec_task(task.id, BACKGROUND).stdout.split()[0]
        time.sleep(2.5)
        status = sdk.status_task(task.id)  # reaps idle tasks first
        assert status.state == "paused" and status.idle_action == "pause"
        assert _cmdline(sdk, task.id, pid) == "sleep 1000"
    finally:
        sdk.delete_task(task.id)


def test_bad_pause_requests_are_clear_errors(guest_install: Any, pyro_state: Path) -> None:
    proc = pyro("task", "pause", "nosuchtask")
    assert proc.returncode != 0 and "no task with id" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = pyro("task", "create", ENV, "--idle-action", "sleep")
    assert proc.returncode != 0 and "sleep" in proc.stderr and "Traceback" not in proc.stderr
