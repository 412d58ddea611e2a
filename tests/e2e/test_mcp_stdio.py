"""``pyro mcp serve`` as a real subprocess, driven by the MCP SDK's stdio client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers.guest import vmm_processes
from mcp import Client, StdioServerParameters

from pyro.machines.registry import VMRegistry

ROOT = Path(__file__).parents[2]
SERVE = [sys.executable, "-m", "pyro.cli", "mcp", "serve"]


def run_spec(*steps: dict[str, Any], **body: Any) -> dict[str, Any]:
    spec = {"environment": "debian:12", "timeoutSeconds": 300, "steps": list(steps), **body}
    return {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "stdio"}, "spec": spec}


BAD_SPEC = run_spec({"name": "hello", "run": "true", "timeoutSeconds": -5})


def server_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "mcp" in child.cmdline() and "serve" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def session(profile: str = "full") -> dict[str, Any]:
    params = StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:], "--profile", profile], env=dict(os.environ), cwd=ROOT
    )
    seen: dict[str, Any] = {}
    async with Client(params) as client:
        seen["server"] = client.server_info
        seen["tools"] = [tool.name for tool in (await client.list_tools()).tools]
        seen["vm_run"] = await client.call_tool(
            "vm_run",
            {
                "spec": run_spec(
                    {"name": "greet", "run": 'echo "$GREETING from $(uname -s)"'},
                    {"name": "answer", "argv": ["sh", "-c", "echo $((6 * 7))"]},
                    env={"GREETING": "hello"},
                )
            },
        )
        seen["plan"] = await client.call_tool(
            "plan", {"spec": run_spec({"name": "a", "run": "true"})}
        )
        created = await client.call_tool("task_create", {"environment": "debian:12"})
        seen["task_create"] = created
        task_id = created.structured_content["id"]
        seen["exec1"] = await client.call_tool(
            "task_exec", {"task_id": task_id, "command": "echo kept > state.txt"}
        )
        seen["exec2"] = await client.call_tool(
            "task_exec", {"task_id": task_id, "command": ["cat", "state.txt"]}
        )
        seen["task_delete"] = await client.call_tool("task_delete", {"task_id": task_id})
        seen["bad"] = await client.call_tool("plan", {"spec": BAD_SPEC})
    return seen


@pytest.mark.guest
def test_stdio_session_on_a_real_guest(guest_install: Any, pyro_state: Path) -> None:
    seen = anyio.run(session)
    assert seen["server"].name == "pyro"
    assert "vm_run" in seen["tools"] and "task_exec" in seen["tools"] and len(seen["tools"]) == 49

    run = seen["vm_run"]
    assert not run.is_error, text_of(run)
    result = run.structured_content
    assert result["ok"] is True and result["exit_code"] == 0
    outputs = {step["name"]: step["stdout"] for step in result["steps"] if step["action"] == "exec"}
    assert outputs == {"greet": "hello from Linux\n", "answer": "42\n"}
    assert (result["stdout"], result["stderr"]) == ("42\n", "")  # the last exec step's

    plan = seen["plan"]
    assert not plan.is_error, text_of(plan)
    assert plan.structured_content["applyable"] is True
    assert [s["action"] for s in plan.structured_content["steps"]][-2:] == ["exec", "cleanup"]

    assert not seen["task_create"].is_error, text_of(seen["task_create"])
    assert seen["exec1"].structured_content["exit_code"] == 0, text_of(seen["exec1"])
    second = seen["exec2"].structured_content
    assert (second["exit_code"], second["stdout"]) == (0, "kept\n"), text_of(seen["exec2"])
    assert seen["task_delete"].structured_content["deleted"] is True

    bad = seen["bad"]
    assert bad.is_error
    assert "/spec/steps/0/timeoutSeconds" in text_of(bad)
    assert bad.structured_content["error"]["issues"][0]["pointer"] == "/spec/steps/0/timeoutSeconds"
    assert server_processes() == []


def test_stdout_carries_only_protocol_messages(tmp_path: Path) -> None:
    """Raw JSON-RPC over the pipes: every stdout line is a message; logs go to stderr."""
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "spec_validate", "arguments": {"spec": BAD_SPEC}},
        },
    ]
    env = {**os.environ, "PYRO_STATE_DIR": str(tmp_path / "state")}
    with open(tmp_path / "stderr.txt", "w") as stderr_file:
        proc = subprocess.Popen(
            [*SERVE, "--profile", "task-core"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            env=env,
            cwd=ROOT,
        )
    assert proc.stdin is not None and proc.stdout is not None
    replies: dict[int, Any] = {}
    try:
        for message in messages:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            if "id" in message:
                # Wait for the reply before going on: EOF on stdin cancels calls in flight.
                line = proc.stdout.readline()
                reply = json.loads(line)  # anything but a JSON-RPC message fails here
                replies[reply["id"]] = reply
        proc.stdin.close()
        stdout_rest = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert stdout_rest == ""
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert sorted(replies) == [1, 2, 3]
    assert replies[1]["result"]["serverInfo"]["name"] == "pyro"
    assert "vm_run" in replies[1]["result"]["instructions"]
    tools = [tool["name"] for tool in replies[2]["result"]["tools"]]
    assert tools == [
        "vm_run",
        "env_list",
        "task_create",
        "task_exec",
        "task_status",
        "task_logs",
        "task_delete",
        "task_list",
        "plan",
        "apply",
    ]
    # task-core has no spec_validate: an unknown tool is an error, not a crash.
    assert replies[3].get("error") or replies[3]["result"]["isError"]


def test_unknown_profile_is_a_usage_error() -> None:
    proc = subprocess.run(
        [*SERVE, "--profile", "everything"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "everything" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.guest
def test_host_disconnecting_mid_call_leaves_no_vm(guest_install: Any, pyro_state: Path) -> None:
    """The host quits (stdin EOF) while vm_run runs: the server deletes the VM and exits."""
    registry = VMRegistry(pyro_state)
    proc = subprocess.Popen(
        SERVE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for message in (
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {
                    "name": "vm_run",
                    "arguments": {"environment": "debian:12", "command": "sleep 600"},
                },
            },
        ):
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        deadline = time.monotonic() + 300  # deadlock guard only
        while not any(r.state == "running" for r in registry.list()):
            assert time.monotonic() < deadline, "the VM never came up"
            time.sleep(0.1)
        proc.stdin.close()
        proc.stdout.read()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert registry.list() == []
    assert vmm_processes(str(pyro_state)) == []
