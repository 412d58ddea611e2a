"""Several execs at once in one task, on real guests, from the CLI, the SDK and MCP.

Overlap is asserted on what the guest and the journal say (each command prints the guest's
clock before and after its sleep), never on host wall-clock thresholds: how much faster it
is belongs to the bench.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters

from pyro.sdk import Pyro
from pyro.tasks.session import PIDFILE, SOCK

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]
ROOT = Path(__file__).parents[2]
ENV = "debian:12"
SPAN = "date +%s.%N; sleep {s}; echo {word}; date +%s.%N"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PYRO, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pyro {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PYRO, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def span(stdout: str, word: str) -> tuple[float, float]:
    """(start, end) of a SPAN command in guest time, checking its word."""
    start, said, end = stdout.split()
    assert said == word
    return float(start), float(end)


def overlapping(*spans: tuple[float, float]) -> bool:
    return max(s for s, _ in spans) < min(e for _, e in spans)


def gone(pid: int, timeout: float = 10) -> bool:
    """Whether process ``pid`` has ended (a zombie counts) within ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def keeper_pid(state: Path, task_id: str) -> int:
    return int((state / "vms" / task_id / PIDFILE).read_text())


def test_two_cli_processes_run_at_once_and_the_journal_shows_it(
    guest_install: Any, pyro_state: Path
) -> None:
    task_id = cli("task", "create", ENV, "--id-only").stdout.strip()
    try:
        procs = {
            word: spawn("task", "exec", task_id, "--", "sh", "-c", SPAN.format(s=3, word=word))
            for word in ("a", "b")
        }
        outs = {word: p.communicate(timeout=300) for word, p in procs.items()}
        for word, p in procs.items():
            assert p.returncode == 0, outs[word][1]
        spans = [span(outs[w][0], w) for w in ("a", "b")]
        assert overlapping(*spans)  # in one sleep's time, not two

        logs = json.loads(cli("task", "logs", task_id, "--json").stdout)["entries"]
        assert [e["seq"] for e in logs] == [1, 2]  # start order
        assert logs[0]["started_at"] <= logs[1]["started_at"]
        assert (logs[0]["overlaps"], logs[1]["overlaps"]) == ([2], [1])
        assert sorted(e["stdout"].split()[1] for e in logs) == ["a", "b"]
        human = cli("task", "logs", task_id).stdout
        assert "[ran with #2]" in human and "[ran with #1]" in human

        # Stopping ends the keeper and leaves none of its files.
        dir_ = pyro_state / "vms" / task_id
        keeper = keeper_pid(pyro_state, task_id) if (dir_ / PIDFILE).exists() else None
        cli("task", "stop", task_id)
        assert keeper is None or gone(keeper)
        assert not (dir_ / SOCK).exists() and not (dir_ / PIDFILE).exists()
        # ... and the next exec boots the task and starts a new one.
        again = cli("task", "exec", task_id, "--", "echo", "again")
        assert again.stdout == "again\n"
    finally:
        cli("task", "delete", task_id)


def test_kill_9_of_one_cli_leaves_the_other_exec_running_and_nothing_leaks(
    guest_install: Any, pyro_state: Path
) -> None:
    task_id = cli("task", "create", ENV, "--id-only").stdout.strip()
    try:
        doomed = spawn(
            "task", "exec", task_id, "--", "sh", "-c", "touch a-began; sleep 4; touch a-ended"
        )
        other = spawn(
            "task", "exec", task_id, "--", "sh", "-c", "touch b-began; sleep 6; echo b-done"
        )
        # Both run in the guest (a third exec, at the same time, looks).
        end = time.monotonic() + 120
        while time.monotonic() < end:
            probe = subprocess.run(
                [*PYRO, "task", "exec", task_id, "--", "sh", "-c", "test -e a-began -a -e b-began"],
                capture_output=True,
                timeout=120,
            )
            if probe.returncode == 0:
                break
        else:
            pytest.fail("the two commands never ran at the same time")
        keeper = keeper_pid(pyro_state, task_id)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
        out, err = other.communicate(timeout=300)
        assert other.returncode == 0, err
        assert out == "b-done\n"
        time.sleep(4)  # past the end the killed command would have had
        check = subprocess.run(
            [*PYRO, "task", "exec", task_id, "--", "test", "-e", "a-ended"], capture_output=True
        )
        assert check.returncode == 1  # the killed CLI's command was cancelled in the guest
        logs = json.loads(cli("task", "logs", task_id, "--json").stdout)["entries"]
        assert any(e["stdout"] == "b-done\n" for e in logs)
    finally:
        cli("task", "delete", task_id)
    assert gone(keeper)
    assert not (pyro_state / "vms" / task_id).exists()


def test_a_keeper_ends_with_its_vmm_and_the_reaper_leaves_nothing(
    guest_install: Any, pyro_state: Path
) -> None:
    task_id = cli("task", "create", ENV, "--id-only").stdout.strip()
    try:
        cli("task", "exec", task_id, "--", "true")
        keeper = keeper_pid(pyro_state, task_id)
        vm = json.loads((pyro_state / "vms" / task_id / "vm.json").read_text())
        os.kill(vm["handle"]["pid"], signal.SIGKILL)  # the VMM dies under it
        assert gone(keeper)
        status = json.loads(cli("task", "status", task_id, "--json").stdout)  # reaps
        assert status["task"]["state"] == "stopped"
        dir_ = pyro_state / "vms" / task_id
        assert not (dir_ / SOCK).exists() and not (dir_ / PIDFILE).exists()
    finally:
        cli("task", "delete", task_id)


def test_sdk_threads_exec_at_once_on_one_task(guest_install: Any, pyro_state: Path) -> None:
    pyro = Pyro(state_dir=pyro_state)
    task = pyro.create_task(ENV)
    try:
        results: dict[str, Any] = {}

        def run(word: str) -> None:
            results[word] = pyro.exec_task(task.id, SPAN.format(s=2, word=word))

        threads = [threading.Thread(target=run, args=(w,)) for w in ("x", "y", "z")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert {w: r.exit_code for w, r in results.items()} == {"x": 0, "y": 0, "z": 0}
        assert overlapping(*(span(r.stdout, w) for w, r in results.items()))
        assert sorted(r.seq for r in results.values()) == [1, 2, 3]
        entries = pyro.logs_task(task.id).entries
        assert [(e.seq, e.overlaps) for e in entries] == [(1, [2, 3]), (2, [1, 3]), (3, [1, 2])]
    finally:
        pyro.delete_task(task.id)


async def mcp_two_execs() -> dict[str, Any]:
    params = StdioServerParameters(
        command=PYRO[0], args=[*PYRO[1:], "mcp", "serve"], env=dict(os.environ), cwd=ROOT
    )
    seen: dict[str, Any] = {}
    async with Client(params) as client:
        created = await client.call_tool("task_create", {"environment": ENV})
        task_id = created.structured_content["id"]

        async def call(word: str) -> None:
            seen[word] = await client.call_tool(
                "task_exec", {"task_id": task_id, "command": SPAN.format(s=3, word=word)}
            )

        async with anyio.create_task_group() as group:
            group.start_soon(call, "m")
            group.start_soon(call, "n")
        seen["logs"] = await client.call_tool("task_logs", {"task_id": task_id})
        seen["delete"] = await client.call_tool("task_delete", {"task_id": task_id})
    return seen


def test_mcp_two_task_exec_calls_in_flight_on_one_session(
    guest_install: Any, pyro_state: Path
) -> None:
    seen = anyio.run(mcp_two_execs)
    outs = {w: seen[w].structured_content for w in ("m", "n")}
    assert all(o["exit_code"] == 0 for o in outs.values()), outs
    assert overlapping(*(span(o["stdout"], w) for w, o in outs.items()))
    entries = seen["logs"].structured_content["entries"]
    assert [(e["seq"], e["overlaps"]) for e in entries] == [(1, [2]), (2, [1])]
    assert seen["delete"].structured_content["deleted"] is True


def test_stop_cuts_off_a_running_exec_after_its_wait_and_journals_it(
    guest_install: Any, pyro_state: Path
) -> None:
    task_id = cli("task", "create", ENV, "--id-only").stdout.strip()
    try:
        running = spawn("task", "exec", task_id, "--", "sh", "-c", "touch began; sleep 120")
        end = time.monotonic() + 120
        while time.monotonic() < end:
            probe = subprocess.run(
                [*PYRO, "task", "exec", task_id, "--", "test", "-e", "began"], capture_output=True
            )
            if probe.returncode == 0:
                break
        keeper = keeper_pid(pyro_state, task_id)
        stopped = json.loads(cli("task", "stop", task_id, "--json").stdout)["task"]
        assert stopped["state"] == "stopped"
        _, err = running.communicate(timeout=120)
        assert running.returncode != 0 and "Traceback" not in err
        assert gone(keeper)
        dir_ = pyro_state / "vms" / task_id
        assert not (dir_ / SOCK).exists() and not (dir_ / PIDFILE).exists()
        entries = json.loads(cli("task", "logs", task_id, "--json").stdout)["entries"]
        cut = [e for e in entries if e["argv"][-1] == "touch began; sleep 120"]
        assert len(cut) == 1 and cut[0]["exit_code"] is None and cut[0]["error"]
    finally:
        cli("task", "delete", task_id)
