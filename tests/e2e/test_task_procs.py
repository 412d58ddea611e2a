"""Shells and services in a task, on a real guest, through the CLI (driven through a real
pseudo-terminal), the SDK and MCP (the stdio client of ``pyro mcp serve``).

One task serves the whole module (each boot costs seconds under TCG); every CLI step is a new
pyro process, so the shells and services have to outlive the host session that made them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.guest import vmm_processes
from mcp import Client, StdioServerParameters

from pyro.errors import NotFoundError, RunTimeoutError, StateError
from pyro.sdk import Pyro

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]
ROOT = Path(__file__).parents[2]
#: A tiny HTTP server in Perl (debian:12 has no python3): one line per request in its log.
HTTP_SERVER = [
    "perl",
    "-MIO::Socket::INET",
    "-e",
    '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:" . $ARGV[0], Listen => 5,'
    ' ReuseAddr => 1) or die "cannot listen: $!\\n"; $| = 1; print "listening on $ARGV[0]\\n";'
    ' while ($c = $s->accept) { $r = <$c>; print "request: $r";'
    ' print $c "HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n"; close $c }',
]


def pyro(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PYRO, *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = pyro(*args, timeout=timeout)
    assert proc.returncode == 0, f"pyro {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def task_id(guest_install: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYRO_STATE_DIR", str(state))
        made = ok("task", "create", "debian:12", "--id-only").stdout.strip()
        try:
            yield made
        finally:
            pyro("task", "delete", made)
            left = vmm_processes(str(state))
            for proc in left:
                proc.kill()
            assert not left, "the task's VMM outlived its deletion"


class Terminal:
    """``pyro`` running on a real pseudo-terminal (``pty.fork``), as a user's shell runs it."""

    def __init__(self, *args: str, rows: int = 30, cols: int = 90) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: pyro on the PTY's slave side
            self._winsize(0, rows, cols)
            os.execvpe(PYRO[0], [*PYRO, *args], dict(os.environ))
        self.pid, self.fd = pid, fd
        self.seen = b""

    @staticmethod
    def _winsize(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def resize(self, rows: int, cols: int) -> None:
        self._winsize(self.fd, rows, cols)  # the kernel sends pyro SIGWINCH

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def expect(self, wanted: bytes, seconds: float = 60) -> bytes:
        """Output until ``wanted`` shows up (the whole output so far is kept in ``seen``)."""
        end = time.monotonic() + seconds
        start = len(self.seen)
        while wanted not in self.seen[start:]:
            left = end - time.monotonic()
            assert left > 0, f"{wanted!r} never came; the terminal showed:\n{self.seen[-800:]!r}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 1))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: pyro exited and closed the terminal
                    chunk = b""
                if not chunk:
                    assert wanted in self.seen[start:], self.seen[-800:]
                    break
                self.seen += chunk
        return self.seen[start:]

    def wait(self, seconds: float = 60) -> int:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                while select.select([self.fd], [], [], 0.1)[0]:
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        break
                    self.seen += chunk
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"pyro did not exit; the terminal showed:\n{self.seen[-800:]!r}")


def test_cli_shell_on_a_real_terminal(task_id: str) -> None:
    term = Terminal("task", "shell", task_id, "--name", "t1", rows=30, cols=90)
    term.expect(b"# ")  # bash's prompt
    term.type(b"stty size; echo TERM=$TERM; echo mark-$((20+1))\r")
    out = term.expect(b"mark-21")
    assert b"30 90" in out and b"TERM=xterm-256color" in out
    term.resize(40, 120)
    time.sleep(1)  # pyro passes the new size on between keystrokes
    term.type(b"stty size; echo mark-$((20+2))\r")
    assert b"40 120" in term.expect(b"mark-22")
    # Ctrl-C interrupts the guest's program; the shell (and pyro) stay.
    term.type(b"sleep 300\r")
    time.sleep(2)
    term.type(b"\x03")
    term.type(b"echo rc-$?-$((20+3))\r")
    assert b"rc-130-23" in term.expect(b"-23")
    # While it is attached, other processes use the task through its session keeper: an
    # exec from another CLI runs at once, and a program typing into this very shell shows.
    started = time.monotonic()
    assert ok("task", "exec", task_id, "--", "echo", "beside").stdout.startswith("beside")
    assert time.monotonic() - started < 60  # not queued behind the attached shell
    Pyro().write_task_shell(task_id, "t1", "echo from-another-process-$((6*7))\n")
    term.expect(b"from-another-process-42")
    # Detach (Ctrl-]): pyro ends, the shell does not; what it prints meanwhile is kept.
    term.type(b"(sleep 3; echo late-$((6*7))) &\r")
    time.sleep(1)
    term.type(b"\x1d")
    assert term.wait() == 0
    assert b"detached" in term.seen
    time.sleep(4)
    again = Terminal("task", "shell", task_id, "--name", "t1")
    assert b"late-42" in again.expect(b"late-42")
    again.type(b"echo back-$((40+3))\r")
    again.expect(b"back-43")
    again.type(b"exit\r")
    assert again.wait() == 0
    assert b"ended (exit code 0)" in again.seen
    assert "t1" not in [s.name for s in Pyro().list_task_shells(task_id)]


def test_shell_needs_a_terminal_and_says_so(task_id: str) -> None:
    proc = pyro("task", "shell", task_id)
    assert proc.returncode != 0
    assert "needs a terminal" in proc.stderr and "pyro task exec" in proc.stderr


def test_sdk_shell_survives_other_hosts_and_loses_nothing(task_id: str) -> None:
    sdk = Pyro()
    info = sdk.open_task_shell(task_id, "s2", rows=20, cols=70)
    assert info.running and info.pid > 1
    sdk.write_task_shell(task_id, "s2", "stty size; echo one-$((1+1))\n")
    out, cursor = _read_until(sdk, task_id, "s2", 0, "one-2")
    assert "20 70" in out
    sdk.write_task_shell(task_id, "s2", "(sleep 2; echo two-$((2+2))) &\n")
    ok("task", "exec", task_id, "--", "true")  # another host, in another process
    out, cursor = _read_until(sdk, task_id, "s2", cursor, "two-4")
    assert "one-2" not in out  # read on from the cursor: nothing twice, nothing lost
    sdk.resize_task_shell(task_id, "s2", 50, 132)
    sdk.write_task_shell(task_id, "s2", "sleep 300\n")
    time.sleep(2)
    sdk.signal_task_shell(task_id, "s2", "INT")
    sdk.write_task_shell(task_id, "s2", "echo rc-$?; stty size\n")
    out, cursor = _read_until(sdk, task_id, "s2", cursor, "50 132")
    assert "rc-130" in out
    assert [s.name for s in sdk.list_task_shells(task_id)] == ["s2"]
    with pytest.raises(StateError, match="already has a shell named 's2'"):
        sdk.open_task_shell(task_id, "s2")
    sdk.close_task_shell(task_id, "s2")
    with pytest.raises(NotFoundError, match="no shell named 's2'"):
        sdk.read_task_shell(task_id, "s2")


def _read_until(sdk: Pyro, task_id: str, name: str, cursor: int, text: str) -> tuple[str, int]:
    out = ""
    end = time.monotonic() + 60
    while text not in out:
        assert time.monotonic() < end, out
        got = sdk.read_task_shell(task_id, name, cursor, wait_s=2)
        assert got.missed == 0
        out += got.text
        cursor = got.cursor
    return out, cursor


def test_cli_service_lifecycle(task_id: str) -> None:
    started = ok(
        "task",
        "service",
        "start",
        task_id,
        "web",
        "--ready-port",
        "8000",
        "--ready-http",
        "/health",
        "--json",
        "--",
        *HTTP_SERVER,
        "8000",
    )
    first = json.loads(started.stdout)["service"]
    assert first["state"] == "running" and first["pid"] > 1
    # Every later step is a new pyro process: the service outlived the one that started it.
    status = json.loads(ok("task", "service", "status", task_id, "web", "--json").stdout)
    assert status["service"]["pid"] == first["pid"]
    assert "services:      web" in ok("task", "status", task_id).stdout
    fetched = ok(
        "task",
        "exec",
        task_id,
        "--",
        "perl",
        "-MIO::Socket::INET",
        "-e",
        '$c = IO::Socket::INET->new("127.0.0.1:8000") or die; print $c "GET /x'
        ' HTTP/1.0\\r\\n\\r\\n"; print <$c>',
    )
    assert fetched.stdout.endswith("ok\n")
    logs = ok("task", "service", "logs", task_id, "web").stdout
    assert "listening on 8000" in logs and "request: GET /health" in logs
    assert "request: GET /x" in logs
    duplicate = pyro("task", "service", "start", task_id, "web", "--", "true")
    assert duplicate.returncode != 0 and "already runs a service named 'web'" in duplicate.stderr
    restarted = json.loads(ok("task", "service", "restart", task_id, "web", "--json").stdout)
    assert restarted["service"]["pid"] != first["pid"]
    assert restarted["service"]["restarts"] == 1
    stopped = json.loads(ok("task", "service", "stop", task_id, "web", "--json").stdout)
    assert stopped["service"]["state"] == "stopped"
    assert "listening on 8000" in ok("task", "service", "logs", task_id, "web").stdout
    listed = ok("task", "service", "list", task_id).stdout
    assert "web" in listed and "stopped" in listed
    unknown = pyro("task", "service", "status", task_id, "nope")
    assert unknown.returncode != 0 and "has no service named 'nope'" in unknown.stderr


def test_cli_service_readiness_failures_show_the_log(task_id: str) -> None:
    slow = pyro(
        "task",
        "service",
        "start",
        task_id,
        "slow",
        "--ready-port",
        "8009",
        "--ready-timeout",
        "3",
        "--",
        "sh",
        "-c",
        "echo warming-up; exec sleep 300",
    )
    assert slow.returncode != 0
    assert "not ready within 3 s" in slow.stderr and "warming-up" in slow.stderr
    dead = pyro(
        "task",
        "service",
        "start",
        task_id,
        "dead",
        "--ready-port",
        "8009",
        "--",
        "sh",
        "-c",
        "echo no-config-file >&2; exit 3",
    )
    assert dead.returncode != 0
    assert "ended before it was ready (exit code 3)" in dead.stderr
    assert "no-config-file" in dead.stderr
    for name in ("slow", "dead"):
        ok("task", "service", "stop", task_id, name)


def test_sdk_service_with_a_ready_command_and_a_followed_log(task_id: str) -> None:
    sdk = Pyro()
    script = "i=0; while true; do echo tick-$i; i=$((i+1)); touch /tmp/ready; sleep 1; done"
    info = sdk.start_task_service(
        task_id, "ticker", ["sh", "-c", script], ready_cmd="test -e /tmp/ready"
    )
    assert info.state == "running" and info.readiness == "'test -e /tmp/ready' exits 0"
    got = sdk.logs_task_service(task_id, "ticker")
    later = sdk.logs_task_service(task_id, "ticker", got.cursor, wait_s=10)
    assert later.data and later.cursor > got.cursor and later.text.startswith("tick-")
    with pytest.raises(RunTimeoutError, match="not ready within 2 s"):
        sdk.start_task_service(
            task_id, "never", ["sleep", "300"], ready_port=8010, ready_timeout_s=2
        )
    assert sdk.stop_task_service(task_id, "ticker").state == "stopped"
    assert sdk.stop_task_service(task_id, "never").state == "stopped"
    assert not sdk.logs_task_service(task_id, "ticker").running


def test_mcp_shells_and_services_over_stdio(task_id: str) -> None:
    async def session() -> dict[str, Any]:
        params = StdioServerParameters(
            command=PYRO[0],
            args=[*PYRO[1:], "mcp", "serve", "--profile", "workspace"],
            env=dict(os.environ),
            cwd=ROOT,
        )
        seen: dict[str, Any] = {}
        async with Client(params) as client:

            async def call(tool: str, **arguments: Any) -> dict[str, Any]:
                result = await client.call_tool(tool, {"task_id": task_id, **arguments})
                assert not result.is_error, result
                assert isinstance(result.structured_content, dict)
                return result.structured_content

            shell = await call("task_shell_open", name="m1")
            seen["shell"] = shell
            await call("task_shell_write", name="m1", text="echo mcp-$((3*3))\n")
            out, cursor = "", 0
            for _ in range(30):
                got = await call("task_shell_read", name="m1", cursor=cursor, wait_seconds=2)
                out, cursor = out + got["data"], got["cursor"]
                if "mcp-9" in out:
                    break
            seen["shell_out"] = out
            seen["service"] = await call(
                "task_service_start",
                name="api",
                command=[*HTTP_SERVER, "8020"],
                ready_port=8020,
                ready_http="/",
            )
            seen["services"] = await call("task_service_list")
            seen["logs"] = await call("task_service_logs", name="api")
            seen["stopped"] = await call("task_service_stop", name="api")
            await call("task_shell_close", name="m1")
            missing = await client.call_tool("task_shell_read", {"task_id": task_id, "name": "m1"})
            seen["missing"] = (missing.is_error, getattr(missing.content[0], "text", ""))
        return seen

    seen = anyio.run(session)
    assert seen["shell"]["name"] == "m1" and seen["shell"]["pid"] > 1
    assert "mcp-9" in seen["shell_out"]
    assert seen["service"]["state"] == "running"
    assert [s["name"] for s in seen["services"]["services"]].count("api") == 1
    assert "request: GET /" in seen["logs"]["data"]
    assert seen["stopped"]["state"] == "stopped"
    is_error, text = seen["missing"]
    assert is_error and "no shell named 'm1'" in text
