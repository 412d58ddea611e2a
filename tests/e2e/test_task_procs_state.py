"""Shells and services across the task state changes of issue 21, on real guests.

They live in the guest agent's process table, which is in the guest's memory: a pause saves
it with the rest of the RAM and a resume brings it back (same pids, the shell's variables,
the service's open socket); a fork from memory gets copies that go their own way; a fork
from a snapshot boots cold with the definitions only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pyro.sdk import Pyro
from tests.e2e.test_task_procs import HTTP_SERVER

pytestmark = pytest.mark.guest

ENV = "debian:12"
PORT = "8040"
#: One HTTP request to the service from inside the guest (bash's /dev/tcp; no curl there):
#: the request line alone, all that HTTP_SERVER reads (unread bytes would make its close a
#: reset).
GET = f"exec 3<>/dev/tcp/127.0.0.1/{PORT} && printf 'GET /hello HTTP/1.0\\r\\n' >&3 && cat <&3"


def _shell_until(sdk: Pyro, task_id: str, name: str, marker: str, cursor: int = 0) -> str:
    out = ""
    end = time.monotonic() + 60
    while marker not in out:
        assert time.monotonic() < end, f"{marker!r} never came; got {out[-400:]!r}"
        got = sdk.read_task_shell(task_id, name, cursor, wait_s=5)
        out, cursor = out + got.text, got.cursor
    return out


def _serves(sdk: Pyro, task_id: str) -> bool:
    done = sdk.exec_task(task_id, ["bash", "-c", GET], timeout_seconds=30)
    assert done.exit_code == 0, done.stderr
    return done.stdout.endswith("ok\n")


def test_shells_and_services_survive_pause_and_resume(guest_install: Any, pyro_state: Path) -> None:
    sdk = Pyro(state_dir=pyro_state)
    task = sdk.create_task(ENV)
    try:
        web = sdk.start_task_service(
            task.id, "web", [*HTTP_SERVER, PORT], ready_port=int(PORT), ready_http="/"
        )
        shell = sdk.open_task_shell(task.id, "dev")
        sdk.write_task_shell(task.id, "dev", "MARK=kept; sleep 1000 &\n")

        # An explicit resume.
        sdk.pause_task(task.id)
        assert sdk.status_task(task.id).state == "paused"
        assert sdk.status_task(task.id).services == ["web"]  # from the stored definitions
        assert sdk.status_task_service(task.id, "web").state == "paused"
        assert sdk.status_task(task.id).state == "paused"  # asking did not resume it
        sdk.resume_task(task.id)
        assert sdk.status_task_service(task.id, "web").pid == web.pid
        assert [(s.name, s.pid, s.running) for s in sdk.list_task_shells(task.id)] == [
            ("dev", shell.pid, True)
        ]
        assert _serves(sdk, task.id)
        sdk.write_task_shell(task.id, "dev", "echo mark=$MARK-$((2+3)) jobs=$(jobs | wc -l)\n")
        _shell_until(sdk, task.id, "dev", "mark=kept-5 jobs=1")

        # A shell call resumes a paused task by itself, as an exec does.
        sdk.pause_task(task.id)
        seen = sdk.read_task_shell(task.id, "dev")
        assert sdk.status_task(task.id).state == "running"
        sdk.write_task_shell(task.id, "dev", "echo again-$MARK\n")
        _shell_until(sdk, task.id, "dev", "again-kept", seen.cursor)
        log = sdk.logs_task_service(task.id, "web")
        assert log.running and log.text.count("request: GET /hello") == 1
    finally:
        sdk.delete_task(task.id)


def test_a_fork_copies_shells_and_services(guest_install: Any, pyro_state: Path) -> None:
    """From memory: the fork has the same shells and services (same names and pids: copies
    of the processes) that then go their own way; from a snapshot: a cold boot that knows
    its services' definitions (restart starts them) and has no shells."""
    sdk = Pyro(state_dir=pyro_state)
    source = sdk.create_task(ENV)
    forks: list[str] = []
    try:
        web = sdk.start_task_service(source.id, "web", [*HTTP_SERVER, PORT], ready_port=int(PORT))
        shell = sdk.open_task_shell(source.id, "dev")
        sdk.write_task_shell(source.id, "dev", "WHO=source\n")
        sdk.create_task_snapshot(source.id, "s1")

        fork = sdk.fork_task(source.id)
        forks.append(fork.id)
        assert fork.services == ["web"]
        assert sdk.status_task_service(fork.id, "web").pid == web.pid
        assert sdk.list_task_shells(fork.id)[0].pid == shell.pid
        assert _serves(sdk, fork.id)
        # Apart from here: the fork's shell is its own.
        end = sdk.read_task_shell(source.id, "dev").cursor
        sdk.write_task_shell(fork.id, "dev", "WHO=fork; echo who=$WHO\n")
        _shell_until(sdk, fork.id, "dev", "who=fork")
        sdk.write_task_shell(source.id, "dev", "echo who=$WHO\n")
        assert "who=source" in _shell_until(sdk, source.id, "dev", "who=source", end)
        sdk.stop_task_service(fork.id, "web")
        assert sdk.status_task_service(source.id, "web").state == "running"

        cold = sdk.fork_task(source.id, snapshot="s1")
        forks.append(cold.id)
        assert sdk.list_task_shells(cold.id) == []
        assert sdk.status_task_service(cold.id, "web").state == "not running"
        assert sdk.restart_task_service(cold.id, "web").state == "running"
        assert _serves(sdk, cold.id)
    finally:
        for task_id in [source.id, *forks]:
            sdk.delete_task(task_id)
