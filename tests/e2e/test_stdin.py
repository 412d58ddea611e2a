"""A command's stdin on real guests (debian:12): SDK (bytes, str, file objects, AsyncPyro),
CLI (file redirect, pipe, terminal, --no-stdin) for run, vm exec and task exec, and MCP
through a real stdio client."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from pyro.sdk import Pyro
from pyro.sdk.aio import AsyncPyro

pytestmark = pytest.mark.guest

ENV = "debian:12"
ROOT = Path(__file__).parents[2]
MIB = 1 << 20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """20 MiB of random bytes and their SHA-256, as the host computes it."""
    path = tmp_path_factory.mktemp("stdin") / "big.bin"
    data = os.urandom(20 * MIB + 5)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def task_id(guest_install: Any, pyro_state: Path) -> Iterator[str]:
    pyro = Pyro(state_dir=pyro_state)
    task = pyro.create_task(ENV)
    try:
        yield task.id
    finally:
        pyro.delete_task(task.id)


def pyro_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("timeout", 600)
    return subprocess.run(
        [sys.executable, "-m", "pyro.cli", *args], capture_output=True, cwd=ROOT, env=env, **kwargs
    )


def digest_of(stdout: str | bytes) -> str:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return text.split()[0]


def test_sdk_task_exec_with_bytes_str_and_a_file(
    task_id: str, pyro_state: Path, big_file: tuple[Path, str]
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    path, digest = big_file
    with path.open("rb") as stream:
        out = pyro.exec_task(task_id, "sha256sum", stdin=stream)
    assert (out.exit_code, digest_of(out.stdout)) == (0, digest), out.stderr
    data = path.read_bytes()
    assert digest_of(pyro.exec_task(task_id, ["sha256sum"], stdin=data).stdout) == digest
    assert pyro.exec_task(task_id, ["wc", "-c"], stdin=b"").stdout.strip() == "0"
    assert pyro.exec_task(task_id, ["cat"], stdin="héllo\n").stdout == "héllo\n"
    assert pyro.exec_task(task_id, ["wc", "-c"]).stdout.strip() == "0"  # no stdin: /dev/null
    # A command that never reads its (large) stdin and exits does not hold the host.
    begun = time.monotonic()
    out = pyro.exec_task(task_id, "true", stdin=data * 5)
    assert out.exit_code == 0 and time.monotonic() - begun < 60
    # The journal says a command had stdin, and never keeps it.
    entries = pyro.logs_task(task_id).entries
    assert [e.stdin for e in entries] == [True, True, True, True, False, True]


def test_sdk_run_in_vm_and_async_exec(
    guest_install: Any, pyro_state: Path, task_id: str, big_file: tuple[Path, str]
) -> None:
    path, digest = big_file
    with path.open("rb") as stream:
        result = Pyro(state_dir=pyro_state).run_in_vm(ENV, ["sha256sum"], stdin=stream)
    assert (result.exit_code, digest_of(result.stdout)) == (0, digest), result.stderr

    async def main() -> str:
        out = await AsyncPyro(state_dir=pyro_state).exec_task(task_id, "tr a-z A-Z", stdin=b"abc")
        return out.stdout

    assert asyncio.run(main()) == "ABC"


def test_cli_run_and_vm_exec_take_a_file_redirect(
    guest_install: Any, pyro_state: Path, big_file: tuple[Path, str]
) -> None:
    path, digest = big_file
    with path.open("rb") as stream:
        run = pyro_cli("run", ENV, "--", "sha256sum", stdin=stream)
    assert run.returncode == 0, run.stderr
    assert digest_of(run.stdout) == digest

    made = pyro_cli("vm", "create", ENV, "--json")
    assert made.returncode == 0, made.stderr
    vm_id = __import__("json").loads(made.stdout)["vm"]["id"]
    with path.open("rb") as stream:
        out = pyro_cli("vm", "exec", vm_id, "--", "wc", "-c", stdin=stream)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(b"\n")[0].strip() == str(path.stat().st_size).encode()


def test_cli_task_exec_takes_a_pipe_and_leaves_a_terminal_alone(
    task_id: str, big_file: tuple[Path, str]
) -> None:
    path, digest = big_file
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro.cli", "task", "exec", task_id, "--", "sha256sum"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    with path.open("rb") as stream:
        out, err = proc.communicate(stream.read(), timeout=600)  # the pipe, fed as it drains
    assert proc.returncode == 0, err
    assert digest_of(out) == digest

    # A terminal as stdin is not forwarded: `cat` reads /dev/null and ends at once.
    leader, follower = pty.openpty()
    try:
        term = pyro_cli("task", "exec", task_id, "--", "cat", stdin=follower, timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    assert term.returncode == 0, term.stderr

    # --no-stdin: a file given anyway is not read.
    with path.open("rb") as stream:
        skipped = pyro_cli("task", "exec", task_id, "--no-stdin", "--", "wc", "-c", stdin=stream)
    assert skipped.stdout.split(b"\n")[0].strip() == b"0", skipped.stderr
    empty = pyro_cli("task", "exec", task_id, "--", "wc", "-c")  # /dev/null from the caller
    assert empty.stdout.split(b"\n")[0].strip() == b"0", empty.stderr


async def mcp_session(task_id: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYRO_MCP_STDIN_MAX_BYTES": "100"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "pyro.cli", "mcp", "serve"], env=env, cwd=ROOT
    )
    seen: dict[str, Any] = {}
    async with Client(params) as client:
        seen["run"] = await client.call_tool(
            "vm_run", {"environment": ENV, "command": "tr a-z A-Z", "stdin": "shout\n"}
        )
        seen["exec"] = await client.call_tool(
            "task_exec", {"task_id": task_id, "command": ["wc", "-c"], "stdin": "x" * 100}
        )
        seen["too_big"] = await client.call_tool(
            "task_exec", {"task_id": task_id, "command": ["wc", "-c"], "stdin": "x" * 101}
        )
    return seen


def test_mcp_stdin_over_a_real_stdio_client(task_id: str) -> None:
    seen = anyio.run(mcp_session, task_id)
    run = seen["run"]
    assert not run.is_error, run.content
    assert run.structured_content["stdout"] == "SHOUT\n"
    assert seen["exec"].structured_content["stdout"].strip() == "100"
    too_big = seen["too_big"]
    assert too_big.is_error
    text = "".join(getattr(block, "text", "") for block in too_big.content)
    assert "stdin is 101 bytes; this server takes at most 100 bytes" in text
    assert "PYRO_MCP_STDIN_MAX_BYTES" in text
