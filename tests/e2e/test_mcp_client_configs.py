"""Each MCP client configuration in examples/ parses in that client's own format and starts
``pyro mcp serve`` the way that client would: its command looked up on PATH, its arguments,
the environment that client hands a server, through the real MCP stdio client.

``pyro`` on PATH is a shim that runs this checkout (as an installed ``pyro`` script would).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from pyro.mcp.profiles import DEFAULT_PROFILE
from pyro.mcp.server import tool_names

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
#: The variables Codex passes from its own environment to a stdio server (on Unix).
CODEX_DEFAULT_ENV = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "USER",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "TZ",
)


@pytest.fixture
def path_with_pyro(tmp_path: Path) -> str:
    """A PATH whose ``pyro`` runs this checkout's ``python -m pyro.cli``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "pyro"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m pyro.cli "$@"\n')
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def mcp_servers_entry(name: str) -> tuple[str, list[str], dict[str, str]]:
    """Claude Desktop, Cursor and Claude Code (.mcp.json): ``mcpServers.NAME`` with
    ``command``, ``args``, ``env`` (Claude Code: and ``type: stdio``)."""
    entry = json.loads((EXAMPLES / name).read_text("utf-8"))["mcpServers"]["pyro"]
    assert set(entry) <= {"type", "command", "args", "env"}, entry
    assert entry.get("type", "stdio") == "stdio"
    assert isinstance(entry["command"], str) and " " not in entry["command"]
    return entry["command"], list(entry.get("args", [])), dict(entry.get("env", {}))


def start(command: str, args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Start the server as the client would and ask what it offers."""
    found = shutil.which(command, path=env["PATH"])
    assert found, f"{command} is not on PATH"

    async def session() -> dict[str, Any]:
        params = StdioServerParameters(command=found, args=args, env=env, cwd=cwd)
        async with Client(params) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            environments = await client.call_tool("env_list", {}) if "env_list" in tools else None
        return {"tools": tools, "env_list": environments}

    return anyio.run(session)


def profile_of(args: list[str]) -> str:
    assert args[:2] == ["mcp", "serve"], args
    return args[args.index("--profile") + 1] if "--profile" in args else DEFAULT_PROFILE


@pytest.mark.parametrize(
    "name", ["claude_desktop_mcp_config.json", "cursor_mcp_config.json", "claude_code_mcp.json"]
)
def test_mcp_servers_json_configs_start_the_server(
    name: str, path_with_pyro: str, tmp_path: Path
) -> None:
    command, args, env = mcp_servers_entry(name)
    # These clients start a server with their own environment plus the entry's env.
    seen = start(command, args, {**os.environ, "PATH": path_with_pyro, **env}, tmp_path)
    assert seen["tools"] == tool_names(profile_of(args))


def test_codex_toml_config_starts_the_server(
    path_with_pyro: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tomllib.loads((EXAMPLES / "codex_config.toml").read_text("utf-8"))
    entry = config["mcp_servers"]["pyro"]
    known = {"command", "args", "env", "env_vars", "cwd", "startup_timeout_sec", "tool_timeout_sec"}
    assert set(entry) <= known, entry
    assert entry["tool_timeout_sec"] >= 600  # a task command may run for minutes
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    # Codex: a few of its own variables, those env_vars names, then env.
    parent = {**os.environ, "PATH": path_with_pyro}
    env = {k: parent[k] for k in (*CODEX_DEFAULT_ENV, *entry.get("env_vars", [])) if k in parent}
    env.update(entry.get("env", {}))
    assert env["PYRO_STATE_DIR"] == str(tmp_path / "state")  # forwarded by env_vars
    seen = start(entry["command"], list(entry["args"]), env, tmp_path)
    assert seen["tools"] == tool_names(profile_of(list(entry["args"])))
    listed = seen["env_list"]
    assert listed is not None and not listed.is_error, listed
    assert "debian:12" in [e["name"] for e in listed.structured_content["environments"]]


def test_opencode_json_config_starts_the_server(path_with_pyro: str, tmp_path: Path) -> None:
    config = json.loads((EXAMPLES / "opencode.json").read_text("utf-8"))
    assert config["$schema"] == "https://opencode.ai/config.json"
    entry = config["mcp"]["pyro"]
    # OpenCode's local server: these keys only (its schema allows no others).
    assert set(entry) <= {"type", "command", "environment", "enabled", "timeout"}, entry
    assert entry["type"] == "local" and entry["enabled"] is True
    command, *args = entry["command"]  # one array: the program, then its arguments
    env = {**os.environ, "PATH": path_with_pyro, **entry.get("environment", {})}
    seen = start(command, args, env, tmp_path)
    assert seen["tools"] == tool_names(profile_of(args))
