"""The workspace tools' refusals, through the real MCP client and the real :class:`pyro.Pyro`:
host paths outside the root are refused before the task is even looked up, content and
sizes are checked before anything reaches a guest. (On a real guest:
tests/e2e/test_mcp_workspace_stdio.py.)"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pyro.mcp.tools_workspace import READ_MAX, WRITE_MAX
from tests.unit.mcp.test_mcp_confinement import TOKEN, call, error_type, host, seen

pytestmark = [pytest.mark.anyio, pytest.mark.hostile]
__all__ = ["host"]  # the fixture, used by name

#: No task has this id: a tool that got past its own checks says NotFoundError.
NO_TASK = "deadbeef0000"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("source", ["..", "/etc", "away", "{host}/outside", "../outside"])
async def test_sync_push_from_outside_the_root_is_refused(host: Path, source: str) -> None:
    result = await call("task_sync_push", {"task_id": NO_TASK, "source": source.format(host=host)})
    assert error_type(result) == "OutsideRootError", seen(result)
    assert "source folder" in seen(result) and TOKEN not in seen(result)


@pytest.mark.parametrize("output", ["../out", "/tmp/out", "away/x", "{host}/outside/x"])
async def test_export_outside_the_root_is_refused(host: Path, output: str) -> None:
    arguments = {"task_id": NO_TASK, "path": "/workspace", "output": output.format(host=host)}
    result = await call("task_export", arguments)
    assert error_type(result) == "OutsideRootError", seen(result)
    assert "export output" in seen(result)


async def test_inside_the_root_the_task_is_looked_up(host: Path) -> None:
    # A folder inside the root holding a link that leaves it is refused as a whole.
    leaky = await call("task_sync_push", {"task_id": NO_TASK, "source": "envs"})
    assert error_type(leaky) == "UsageError" and "points outside" in seen(leaky)
    assert TOKEN not in seen(leaky)
    (host / "root" / "clean").mkdir()
    for tool, arguments in [
        ("task_sync_push", {"source": "clean"}),
        ("task_export", {"path": "/workspace", "output": "out"}),
    ]:
        result = await call(tool, {"task_id": NO_TASK, **arguments})
        assert error_type(result) == "NotFoundError", seen(result)
    # A refused export leaves no artifacts folder behind.
    assert list((host / "root" / ".pyro-artifacts").glob("export-*")) == []


async def test_write_checks_its_content_before_the_guest(host: Path) -> None:
    bad = await call(
        "task_file_write",
        {"task_id": NO_TASK, "path": "a", "content": "not base64!", "encoding": "base64"},
    )
    assert error_type(bad) == "UsageError" and "content is not base64" in seen(bad)
    big = base64.b64encode(b"x" * (WRITE_MAX + 1)).decode()
    large = await call(
        "task_file_write", {"task_id": NO_TASK, "path": "a", "content": big, "encoding": "base64"}
    )
    assert error_type(large) == "LimitError" and "task_sync_push" in seen(large)
    mode = await call(
        "task_file_write", {"task_id": NO_TASK, "path": "a", "content": "hi", "mode": 0o10000}
    )
    assert error_type(mode) == "UsageError" and "'mode'" in seen(mode)
    fits = await call("task_file_write", {"task_id": NO_TASK, "path": "a", "content": "hi"})
    assert error_type(fits) == "NotFoundError"


async def test_read_size_is_bounded_by_the_schema(host: Path) -> None:
    result = await call(
        "task_file_read", {"task_id": NO_TASK, "path": "a", "max_bytes": READ_MAX + 1}
    )
    assert error_type(result) == "UsageError" and "'max_bytes'" in seen(result)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("task_update", {"name": "x"}),
        ("task_stop", {}),
        ("task_start", {}),
        ("task_file_list", {}),
        ("task_file_read", {"path": "a"}),
        ("task_snapshot_create", {"name": "s"}),
        ("task_snapshot_list", {}),
        ("task_snapshot_delete", {"name": "s"}),
        ("task_reset", {}),
    ],
)
async def test_every_tool_says_which_task_is_missing(
    host: Path, tool: str, arguments: dict[str, str]
) -> None:
    result = await call(tool, {"task_id": NO_TASK, **arguments})
    assert error_type(result) == "NotFoundError", seen(result)
    assert f"no task with id '{NO_TASK}'" in seen(result)


async def test_update_with_nothing_to_change_is_a_usage_error(host: Path) -> None:
    result = await call("task_update", {"task_id": NO_TASK})
    assert error_type(result) == "UsageError" and "nothing to change" in seen(result)
