"""What an LLM host meets over stdio: the size of ``tools/list``, pyro's error for a wrong
argument, progress for a pull and for each step of a run, and the console as a resource."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.registry import Registry
from mcp import Client, StdioServerParameters
from mcp.types import LoggingMessageNotificationParams

from pyro.environments.cache.store import Cache
from pyro.environments.service import EnvironmentService
from pyro.mcp.profiles import BUDGETS, PROFILES

ROOT = Path(__file__).parents[2]
SERVE = [sys.executable, "-m", "pyro.cli", "mcp", "serve"]


def serve(profile: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=SERVE[0],
        args=[*SERVE[1:], "--profile", profile],
        env={**os.environ, **env},
        cwd=ROOT,
    )


def listed_bytes(tools: list[Any]) -> int:
    """The ``tools`` array of the ``tools/list`` result as the wire carries it (compact JSON)."""
    wire = [tool.model_dump(by_alias=True, exclude_none=True, mode="json") for tool in tools]
    return len(json.dumps({"tools": wire}, separators=(",", ":")).encode("utf-8"))


def test_every_profile_has_a_budget() -> None:
    assert set(BUDGETS) == set(PROFILES)
    assert BUDGETS["vm-run"] <= 6_000  # issue 19: one tool, and small
    # Each smaller profile costs less than the one that offers more.
    assert BUDGETS["vm-run"] < BUDGETS["task-core"] < BUDGETS["workspace"] < BUDGETS["full"]


@pytest.mark.parametrize("profile", sorted(BUDGETS))
def test_tools_list_fits_the_budget(profile: str) -> None:
    """Measured as a client receives it, over stdio (``PYRO_MCP_BUDGET_REPORT`` prints it)."""

    async def measure() -> int:
        async with Client(serve(profile)) as client:
            return listed_bytes((await client.list_tools()).tools)

    size = anyio.run(measure)
    if os.environ.get("PYRO_MCP_BUDGET_REPORT"):
        print(f"\n{profile}: {size} of {BUDGETS[profile]} bytes")
    assert size <= BUDGETS[profile], f"{profile}: tools/list is {size} bytes"


def test_wrong_argument_type_gets_pyros_error_over_stdio() -> None:
    async def call() -> Any:
        async with Client(serve("full")) as client:
            return await client.call_tool("vm_status", {"vm_id": 42})

    result = anyio.run(call)
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("error: vm_status: wrong argument: 'vm_id'") and "\nhint: " in text
    assert "pydantic" not in text and "http" not in text
    assert result.structured_content["error"]["type"] == "UsageError"


@pytest.mark.registry
def test_env_pull_reports_progress(registry: Registry, tmp_path: Path) -> None:
    """A pull from a real registry into an empty cache: the bytes arrive as progress."""
    source = Cache(tmp_path / "source")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "vmlinux").write_bytes(os.urandom(300_000))
    (staged / "rootfs.ext4").write_bytes(os.urandom(200_000) + b"\0" * 2_000_000)
    source.install("fake:1", staged, {"name": "fake:1", "version": "1.0.0"})
    ref = registry.ref("pyro/mcp-progress", "1")
    EnvironmentService(source).push("fake:1", ref)
    seen: list[tuple[float, float | None, str]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message or ""))

    async def pull() -> Any:
        params = serve("full", PYRO_CACHE_DIR=str(tmp_path / "cache"))
        async with Client(params) as client:
            return await client.call_tool(
                "env_pull", {"environment": ref}, progress_callback=progress
            )

    result = anyio.run(pull)
    assert not result.is_error, result.content
    assert result.structured_content["state"] == "installed"
    values = [value for value, _, _ in seen]
    assert values == sorted(set(values))  # each notification above the last
    assert seen[0][2].startswith("install ") and seen[-1][2].startswith("ready ")
    downloads = [value for value, _, text in seen if text.startswith("download ")]
    # Kernel and rootfs bytes added up (the rootfs travels compressed: its zeros are free).
    assert downloads and downloads[-1] >= 500_000


@pytest.mark.guest
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_progress_logs_and_console_on_a_real_guest(guest_install: Any, pyro_state: Path) -> None:
    spec = {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "progress"},
        "spec": {
            "environment": "debian:12",
            "timeoutSeconds": 300,
            "steps": [{"name": "one", "run": "echo one"}, {"name": "two", "run": "echo two"}],
        },
    }
    seen: list[tuple[float, float | None, str]] = []
    logged: list[LoggingMessageNotificationParams] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message or ""))

    async def log(params: LoggingMessageNotificationParams) -> None:
        logged.append(params)

    async def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(serve("full"), mode="legacy", logging_callback=log) as client:
            await client.set_logging_level("debug")
            plan = await client.call_tool("plan", {"spec": spec})
            out["plan"] = [step["id"] for step in plan.structured_content["steps"]]
            out["apply"] = await client.call_tool(
                "apply", {"spec": spec}, progress_callback=progress
            )
            created = await client.call_tool("vm_create", {"environment": "debian:12"})
            vm_id = created.structured_content["id"]
            await client.call_tool("vm_start", {"vm_id": vm_id})
            console = await client.read_resource(f"pyro://vms/{vm_id}/console")
            out["console"] = console.contents[0].text
            await client.call_tool("vm_delete", {"vm_id": vm_id})
        return out

    out = anyio.run(session)
    applied = out["apply"]
    assert not applied.is_error, applied.content
    result = applied.structured_content
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (0, "two\n", "")
    total = len(out["plan"])
    assert [(value, bound) for value, bound, _ in seen] == [(n, total) for n in range(1, total + 1)]
    assert [text for _, _, text in seen] == out["plan"]  # each step's id, in order
    assert [text for _, _, text in seen if text.startswith("exec")] == ["exec.one", "exec.two"]
    assert any("[run] phase=execute" in str(m.data) for m in logged if m.level == "debug")
    assert "pyro-agent: ready" in out["console"]  # the guest said so on its serial port
