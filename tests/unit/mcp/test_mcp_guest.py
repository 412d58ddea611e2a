"""The MCP tools on real guests, through the SDK's in-memory client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.guest import vmm_processes
from mcp import Client

from pyro.machines.registry import VMRegistry
from pyro.mcp.server import build_server
from pyro.sdk import Pyro

pytestmark = [pytest.mark.guest, pytest.mark.anyio]

#: Deadlock guard for waiting on a guest to come up; never reached when things work.
GUARD_S = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def exec_step_of(result: dict[str, Any]) -> dict[str, Any]:
    (step,) = [step for step in result["steps"] if step["action"] == "exec"]
    return step


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {text_of(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_vm_run_returns_output_and_exit_codes(guest_install: Any, pyro_state: Path) -> None:
    async with Client(build_server("vm-run", sdk=Pyro())) as client:
        ok = await call(
            client,
            "vm_run",
            environment="debian:12",
            command='uname -s; echo "$GREETING"',
            env={"GREETING": "hi"},
            timeout_seconds=300,
        )
        failed = await call(
            client, "vm_run", environment="debian:12", command=["sh", "-c", "echo no >&2; exit 3"]
        )
    assert ok["ok"] is True and ok["exit_code"] == 0 and ok["backend"]
    assert exec_step_of(ok)["stdout"] == "Linux\nhi\n"
    # A failing command is a result, not a tool error.
    assert failed["ok"] is False and failed["exit_code"] == 3
    assert exec_step_of(failed)["stderr"] == "no\n"
    assert VMRegistry(pyro_state).list() == []


async def test_vm_lifecycle(guest_install: Any, pyro_state: Path) -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        created = await call(client, "vm_create", environment="debian:12", memory_mib=256)
        vm_id = created["id"]
        assert created["state"] == "created"
        started = await call(client, "vm_start", vm_id=vm_id)
        assert started["state"] == "running"
        status = await call(client, "vm_status", vm_id=vm_id)
        assert status["state"] == "running" and status["memory_mib"] == 256
        listed = await call(client, "vm_list")
        assert [vm["id"] for vm in listed["vms"]] == [vm_id]
        logs = await call(client, "vm_logs", vm_id=vm_id, tail=50)
        assert logs["vm_id"] == vm_id and isinstance(logs["serial"], str)
        output = await call(client, "vm_exec", vm_id=vm_id, command="cat /etc/debian_version")
        assert output["exit_code"] == 0 and output["stdout"].startswith("12.")
        assert output["deleted"] is True  # the result says what happened: the VM is gone
        gone = await client.call_tool("vm_status", {"vm_id": vm_id})
        assert gone.is_error and gone.structured_content["error"]["type"] == "NotFoundError"  # type: ignore[index]
        assert await call(client, "vm_delete", vm_id=vm_id) == {"id": vm_id, "deleted": False}

        second = (await call(client, "vm_create", environment="debian:12"))["id"]
        await call(client, "vm_start", vm_id=second)
        stopped = await call(client, "vm_stop", vm_id=second)
        assert stopped["state"] == "stopped"
        assert await call(client, "vm_delete", vm_id=second) == {"id": second, "deleted": True}
    assert VMRegistry(pyro_state).list() == []


async def test_task_keeps_state_across_calls(guest_install: Any, pyro_state: Path) -> None:
    async with Client(build_server("task-core", sdk=Pyro())) as client:
        task = await call(client, "task_create", environment="debian:12", name="mcp")
        task_id = task["id"]
        try:
            first = await call(client, "task_exec", task_id=task_id, command="echo 1 > n && pwd")
            second = await call(client, "task_exec", task_id=task_id, command=["cat", "n"])
            status = await call(client, "task_status", task_id=task_id)
            logs = await call(client, "task_logs", task_id=task_id)
            listed = await call(client, "task_list")
        finally:
            deleted = await call(client, "task_delete", task_id=task_id)
    assert (first["exit_code"], first["stdout"]) == (0, "/workspace\n")
    assert (second["exit_code"], second["stdout"]) == (0, "1\n")
    assert status["command_count"] == 2
    assert [entry["seq"] for entry in logs["entries"]] == [1, 2]
    assert [t["id"] for t in listed["tasks"]] == [task_id]
    assert deleted == {"id": task_id, "deleted": True}


async def test_two_guest_runs_in_flight_both_complete(guest_install: Any, pyro_state: Path) -> None:
    results: dict[str, dict[str, Any]] = {}
    async with Client(build_server("vm-run", sdk=Pyro())) as client:

        async def run(word: str) -> None:
            arguments = {"environment": "debian:12", "command": f"sleep 1; echo {word}"}
            results[word] = await call(client, "vm_run", **arguments)

        async with anyio.create_task_group() as group:
            group.start_soon(run, "one")
            group.start_soon(run, "two")
    for word, result in results.items():
        assert result["exit_code"] == 0
        assert exec_step_of(result)["stdout"] == f"{word}\n"
    assert results["one"]["vm_id"] != results["two"]["vm_id"]


async def test_cancelled_vm_run_kills_its_vm(guest_install: Any, pyro_state: Path) -> None:
    registry = VMRegistry(pyro_state)
    server = build_server("vm-run", sdk=Pyro())
    async with Client(server) as client, anyio.create_task_group() as group:
        arguments = {"environment": "debian:12", "command": "sleep 600"}
        group.start_soon(client.call_tool, "vm_run", arguments)
        with anyio.fail_after(GUARD_S):
            while not any(r.state == "running" for r in registry.list()):
                await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    assert registry.list() == []
    assert vmm_processes(str(pyro_state)) == []


async def test_a_cancelled_task_exec_ends_only_its_own_command(
    guest_install: Any, pyro_state: Path
) -> None:
    async with Client(build_server("task-core", sdk=Pyro())) as client:
        task_id = (await call(client, "task_create", environment="debian:12"))["id"]
        try:
            other: dict[str, Any] = {}

            async def run_other() -> None:
                script = "touch other-began; sleep 6; echo other-done"
                other.update(await call(client, "task_exec", task_id=task_id, command=script))

            async with anyio.create_task_group() as outer:
                outer.start_soon(run_other)
                async with anyio.create_task_group() as group:
                    script = "touch doomed-began; sleep 4; touch doomed-ended"
                    group.start_soon(
                        client.call_tool, "task_exec", {"task_id": task_id, "command": script}
                    )
                    with anyio.fail_after(GUARD_S):  # both run in the guest
                        while True:
                            probe = await client.call_tool(
                                "task_exec",
                                {
                                    "task_id": task_id,
                                    "command": "test -e doomed-began -a -e other-began",
                                },
                            )
                            if probe.structured_content["exit_code"] == 0:
                                break
                    group.cancel_scope.cancel()
            # The other command finished; the task still runs; the cancelled one was killed.
            assert (other["exit_code"], other["stdout"]) == (0, "other-done\n")
            status = await call(client, "task_status", task_id=task_id)
            assert status["state"] == "running"
            await anyio.sleep(4)
            gone = await call(client, "task_exec", task_id=task_id, command="test -e doomed-ended")
            assert gone["exit_code"] == 1
        finally:
            await call(client, "task_delete", task_id=task_id)
