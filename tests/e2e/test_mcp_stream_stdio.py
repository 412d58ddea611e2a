"""A command's output reaches the MCP client while the command runs, through the real stdio
client, from a real guest command that prints over time; the final result is unchanged."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import LoggingMessageNotificationParams

pytestmark = [
    pytest.mark.guest,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

ROOT = Path(__file__).parents[2]
#: Prints a line a second; each line must be seen before the command ends.
TICKING = "for i in 1 2 3; do echo line$i; echo warn$i >&2; sleep 1; done"
FLOOD = "yes | head -c 3000000; echo; echo done"


def serve(profile: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "pyro.cli", "mcp", "serve", "--profile", profile],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


class Seen:
    """What the client received, with when."""

    def __init__(self) -> None:
        self.logs: list[tuple[float, str | None, str]] = []
        self.progress: list[tuple[float, float, str]] = []

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append((time.monotonic(), params.logger, str(params.data)))

    async def on_progress(self, value: float, total: float | None, message: str | None) -> None:
        self.progress.append((time.monotonic(), value, message or ""))

    def text(self, logger: str) -> str:
        """The output streamed (without pyro's notes)."""
        return "".join(
            data for _, name, data in self.logs if name == logger and not data.startswith("[pyro]")
        )


def check_streamed(seen: Seen, result: Any, ended: float, stdout: str) -> None:
    assert not result.is_error, result.content
    assert result.structured_content["stdout"] == "line1\nline2\nline3\n"  # unchanged
    assert seen.text("pyro.stdout") == "line1\nline2\nline3\n"
    assert seen.text("pyro.stderr") == "warn1\nwarn2\nwarn3\n"
    first = next(at for at, name, data in seen.logs if name == "pyro.stdout")
    assert ended - first > 1.5  # line1 arrived while the command still had 2 s to run
    assert any(message == "stdout: line1" for _, _, message in seen.progress)
    values = [value for _, value, _ in seen.progress]
    assert values == sorted(set(values))  # progress only goes up


def test_task_exec_and_vm_run_stream_output_while_the_command_runs(
    guest_install: Any, pyro_state: Path
) -> None:
    task_seen, run_seen = Seen(), Seen()
    out: dict[str, Any] = {}

    async def session() -> None:
        # The 2026-07-28 way: the client opts in to log messages per request (in _meta).
        async with Client(
            serve("full"), logging_callback=task_seen.log, log_level="info"
        ) as client:
            created = await client.call_tool("task_create", {"environment": "debian:12"})
            task_id = created.structured_content["id"]
            try:
                out["task"] = await client.call_tool(
                    "task_exec",
                    {"task_id": task_id, "command": TICKING},
                    progress_callback=task_seen.on_progress,
                )
                out["task_ended"] = time.monotonic()
            finally:
                await client.call_tool("task_delete", {"task_id": task_id})
        # A handshake-era client: log messages at the server's level (info until setLevel).
        async with Client(serve("vm-run"), logging_callback=run_seen.log, mode="legacy") as client:
            out["run"] = await client.call_tool(
                "vm_run",
                {"environment": "debian:12", "command": TICKING},
                progress_callback=run_seen.on_progress,
            )
            out["run_ended"] = time.monotonic()

    anyio.run(session)
    check_streamed(task_seen, out["task"], out["task_ended"], "line1\nline2\nline3\n")
    check_streamed(run_seen, out["run"], out["run_ended"], "line1\nline2\nline3\n")
    assert out["task"].structured_content["seq"] == 1


def test_a_flooding_command_does_not_flood_the_client(guest_install: Any, pyro_state: Path) -> None:
    from pyro.machines.exec import OUTPUT_CAP
    from pyro.mcp.stream import CAP_BYTES

    seen = Seen()

    async def session() -> Any:
        async with Client(serve("vm-run"), logging_callback=seen.log, log_level="info") as client:
            return await client.call_tool("vm_run", {"environment": "debian:12", "command": FLOOD})

    result = anyio.run(session)
    assert not result.is_error, result.content
    assert result.structured_content["ok"] is True
    assert result.structured_content["stdout"].startswith("y\ny\n")  # the result as before
    streamed = seen.text("pyro.stdout")
    notes = [data for _, _, data in seen.logs if data.startswith("[pyro]")]
    assert len(streamed) <= CAP_BYTES
    assert len([1 for _, name, _ in seen.logs if name == "pyro.stdout"]) < 100
    (note,) = notes
    dropped = int(note.split()[1])
    # Every byte the SDK kept (the result's cap) was streamed or counted as dropped.
    assert dropped + len(streamed.encode()) == OUTPUT_CAP
