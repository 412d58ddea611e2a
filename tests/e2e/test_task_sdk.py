"""Task workspaces through the Python SDK on real guests: sessions, idle stop, streaming."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import NotFoundError
from pyro.sdk import Pyro
from pyro.tasks.ops import TaskExecOutput

pytestmark = pytest.mark.guest

ENV = "debian:12"


def test_concurrent_commands_on_one_task_both_run_and_are_journaled(
    guest_install: Any, pyro_state: Path
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    task = pyro.create_task(ENV)
    try:
        results: dict[str, TaskExecOutput] = {}

        def run(key: str, command: str) -> None:
            results[key] = pyro.exec_task(task.id, command)

        threads = [
            threading.Thread(target=run, args=("slow", "sleep 1; echo slow >> order")),
            threading.Thread(target=run, args=("fast", "echo fast >> order")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert {k: r.exit_code for k, r in results.items()} == {"slow": 0, "fast": 0}
        assert sorted(r.seq for r in results.values()) == [1, 2]
        order = pyro.read_task_file(task.id, "order").decode().split()
        assert sorted(order) == ["fast", "slow"]
        assert [e.seq for e in pyro.logs_task(task.id).entries] == [1, 2]
    finally:
        assert pyro.delete_task(task.id) is True
    with pytest.raises(NotFoundError):
        pyro.status_task(task.id)


def test_an_idle_task_is_stopped_and_boots_again_with_its_files(
    guest_install: Any, pyro_state: Path
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    task = pyro.create_task(ENV, idle_timeout_seconds=1, labels={"kind": "idle"})
    try:
        pyro.exec_task(task.id, "echo still-here > f")
        time.sleep(2.5)  # past the idle timeout; the next task call reaps
        status = pyro.status_task(task.id)
        assert status.state == "stopped" and "idle" in status.reason
        assert pyro.exec_task(task.id, ["cat", "f"]).stdout == "still-here\n"
        assert [t.id for t in pyro.list_tasks(labels={"kind": "idle"})] == [task.id]
    finally:
        pyro.delete_task(task.id)


def test_streamed_output_is_redacted_like_the_result(guest_install: Any, pyro_state: Path) -> None:
    secret = "stream-secret-5d2e"
    pyro = Pyro(state_dir=pyro_state)
    task = pyro.create_task(ENV, secrets={"API_KEY": secret})
    try:
        chunks: list[bytes] = []
        out = pyro.exec_task(
            task.id,
            'for i in 1 2 3; do printf "%s-$i " "$API_KEY"; sleep 0.2; done',
            secret_env=["API_KEY"],
            on_stdout=chunks.append,
        )
        streamed = b"".join(chunks).decode()
        assert streamed == out.stdout
        assert out.stdout == "[REDACTED:API_KEY]-1 [REDACTED:API_KEY]-2 [REDACTED:API_KEY]-3 "
        assert secret not in pyro.logs_task(task.id).model_dump_json()
    finally:
        pyro.delete_task(task.id)
