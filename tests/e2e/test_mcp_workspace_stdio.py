"""The whole task surface over MCP on a real guest, through the real stdio client: files,
sync push, export, snapshots, reset, update, stop/start (``--profile workspace``)."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.guest

ROOT = Path(__file__).parents[2]


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {text_of(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def test_an_agent_lives_in_a_task(guest_install: Any, pyro_state: Path, tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "x.txt").write_text("from the host\n")
    payload = bytes(range(256))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "pyro.cli", "mcp", "serve", "--profile", "workspace"],
        env={**os.environ, "PYRO_MCP_ROOT": str(root), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    out: dict[str, Any] = {}

    async def session() -> None:
        async with Client(params) as client:
            task = await call(client, "task_create", environment="debian:12", name="ws")
            task_id = out["id"] = task["id"]
            try:
                await steps(client, task_id)
            finally:
                out["deleted"] = await call(client, "task_delete", task_id=task_id)

    async def steps(client: Client, task_id: str) -> None:
        out["write"] = await call(
            client, "task_file_write", task_id=task_id, path="notes/a.txt", content="hello\n"
        )
        await call(
            client,
            "task_file_write",
            task_id=task_id,
            path="/workspace/bin.dat",
            content=base64.b64encode(payload).decode(),
            encoding="base64",
            mode=0o600,
        )
        out["text"] = await call(client, "task_file_read", task_id=task_id, path="notes/a.txt")
        out["binary"] = await call(client, "task_file_read", task_id=task_id, path="bin.dat")
        out["too_big"] = await client.call_tool(
            "task_file_read", {"task_id": task_id, "path": "bin.dat", "max_bytes": 10}
        )
        out["list"] = await call(client, "task_file_list", task_id=task_id)
        out["push"] = await call(
            client, "task_sync_push", task_id=task_id, source="src", dest="/workspace/src"
        )
        out["cat"] = await call(
            client, "task_exec", task_id=task_id, command="cat src/x.txt; stat -c %a bin.dat"
        )
        out["update"] = await call(
            client, "task_update", task_id=task_id, name="renamed", labels={"role": "agent"}
        )
        await call(client, "task_snapshot_create", task_id=task_id, name="s1")
        await call(client, "task_file_write", task_id=task_id, path="notes/a.txt", content="x\n")
        out["snapshots"] = await call(client, "task_snapshot_list", task_id=task_id)
        out["reset"] = await call(client, "task_reset", task_id=task_id, snapshot="s1")
        out["after_reset"] = await call(
            client, "task_file_read", task_id=task_id, path="notes/a.txt"
        )
        out["snap_delete"] = [
            await call(client, "task_snapshot_delete", task_id=task_id, name="s1") for _ in range(2)
        ]
        out["export"] = await call(
            client, "task_export", task_id=task_id, path="notes", output="exported"
        )
        out["stop"] = await call(client, "task_stop", task_id=task_id)
        out["start"] = await call(client, "task_start", task_id=task_id)
        out["logs"] = await call(client, "task_logs", task_id=task_id)

    anyio.run(session)
    task_id = out["id"]
    assert out["write"] == {"task_id": task_id, "path": "/workspace/notes/a.txt", "bytes": 6}
    assert out["text"] == {
        "path": "notes/a.txt",
        "size": 6,
        "encoding": "utf-8",
        "content": "hello\n",
    }
    assert out["binary"]["encoding"] == "base64"
    assert base64.b64decode(out["binary"]["content"]) == payload
    too_big = out["too_big"]
    assert too_big.is_error and too_big.structured_content["error"]["type"] == "LimitError"
    assert "larger than max_bytes=10" in text_of(too_big) and "task_export" in text_of(too_big)
    names = {entry["name"]: entry for entry in out["list"]["entries"]}
    assert names["notes"]["kind"] == "directory" and names["bin.dat"]["size"] == 256
    assert (out["push"]["files"], out["push"]["dest"]) == (1, "/workspace/src")
    assert out["cat"]["stdout"] == "from the host\n600\n"
    assert out["update"]["name"] == "renamed" and out["update"]["labels"] == {"role": "agent"}
    assert [s["name"] for s in out["snapshots"]["snapshots"]] == ["baseline", "s1"]
    assert out["reset"]["state"] == "running"
    assert out["after_reset"]["content"] == "hello\n"  # the write after s1 is gone
    assert [d["deleted"] for d in out["snap_delete"]] == [True, False]
    dest = Path(out["export"]["dest"])
    # The export lands in a fresh folder under the root's .pyro-artifacts, never at output.
    assert dest.is_relative_to(root / ".pyro-artifacts") and dest.name == "exported"
    assert (dest / "a.txt").read_text() == "hello\n"
    assert not (root / "exported").exists()
    assert (out["stop"]["state"], out["start"]["state"]) == ("stopped", "running")
    kinds = [(e["kind"], e["argv"][0]) for e in out["logs"]["entries"]]
    assert kinds == [("exec", "/bin/sh"), ("update", "update")]
    assert out["deleted"] == {"id": task_id, "deleted": True}
