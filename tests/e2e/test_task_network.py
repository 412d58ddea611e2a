"""A task's network policy on real guests (debian:12 under QEMU): egress, off, allowlist and
published ports, kept across stop/start; nothing left on the host after delete.

As in test_network.py, every host end is 127.0.0.1: the guest reaches the host's loopback
at 10.0.2.2, published guest ports appear on 127.0.0.1 of the host.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.guest import vmm_processes

from pyro.errors import NetworkError, UsageError
from pyro.net.relay import relay_pids
from pyro.sdk import Pyro

pytestmark = pytest.mark.guest

ENV = "debian:12"
ROOT = Path(__file__).parents[2]
#: bash's /dev/tcp: an HTTP GET with what every Debian image has; prints the body's last line.
GET = (
    'exec 3<>"/dev/tcp/$0/$1" || exit 7; '
    'printf "GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n" >&3; timeout 20 cat <&3 | tail -n 1'
)
#: An HTTP server in perl (perl-base is in every Debian image), started in the background
#: in its own session so the exec that starts it returns at once.
SERVER = (
    "use IO::Socket::INET; $s = IO::Socket::INET->new(LocalPort => $ARGV[0], Listen => 8, "
    'ReuseAddr => 1) or die "listen: $!"; open(F, ">/tmp/ready"); close F; '
    "while ($c = $s->accept) { while (<$c>) { last if /^\\r?$/ } "
    'print $c "HTTP/1.0 200 OK\\r\\n\\r\\nhello from the task\\n"; close $c }'
)
GUEST_PORT = 8000


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from host port {self.server.server_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def host_servers() -> Iterator[tuple[int, int]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pyro_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pyro.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


def fetch(port: int, attempts: int = 40) -> str:
    """GET http://127.0.0.1:PORT/ from the host, retrying while the guest server starts."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                body: bytes = response.read()
                return body.decode()
        except OSError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"127.0.0.1:{port} never answered: {last}")


def test_egress_task_reaches_the_host_and_an_off_task_cannot(
    guest_install: Any, pyro_state: Path, host_servers: tuple[int, int]
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    port, _ = host_servers
    egress = pyro.create_task(ENV, network="egress")
    off = pyro.create_task(ENV)
    try:
        assert egress.network == {"policy": "egress", "allow": [], "publish": []}
        out = pyro.exec_task(egress.id, ["bash", "-c", GET, "10.0.2.2", str(port)])
        assert (out.exit_code, out.stdout) == (0, f"hello from host port {port}\n"), out.stderr
        assert off.network["policy"] == "off"
        out = pyro.exec_task(off.id, ["bash", "-c", GET, "10.0.2.2", str(port)])
        assert out.exit_code != 0 and "hello" not in out.stdout
        # The policy is the task's: after a stop, the exec that boots it applies it again.
        pyro.stop_task(egress.id)
        out = pyro.exec_task(egress.id, ["bash", "-c", GET, "10.0.2.2", str(port)])
        assert out.stdout == f"hello from host port {port}\n", out.stderr
    finally:
        pyro.delete_task(egress.id)
        pyro.delete_task(off.id)


def test_allowlist_task_reaches_only_its_entry_and_leaves_no_relay(
    guest_install: Any, pyro_state: Path, host_servers: tuple[int, int]
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    allowed, other = host_servers
    task = pyro.create_task(ENV, network="allowlist", allow=[f"127.0.0.1:{allowed}"])
    try:
        assert task.network["allow"] == [f"127.0.0.1:{allowed}"]
        out = pyro.exec_task(task.id, ["bash", "-c", GET, "10.0.2.2", str(allowed)])
        assert out.stdout == f"hello from host port {allowed}\n", out.stderr
        out = pyro.exec_task(task.id, ["bash", "-c", GET, "10.0.2.2", str(other)])
        assert out.exit_code != 0 and "hello" not in out.stdout
    finally:
        assert pyro.delete_task(task.id)
    deadline = time.monotonic() + 10
    while relay_pids(task.id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert relay_pids(task.id) == []
    assert vmm_processes(task.id) == []


def test_published_port_through_the_cli_survives_stop_and_start(
    guest_install: Any, pyro_state: Path
) -> None:
    host_port = free_port()
    made = pyro_cli(
        "task", "create", ENV, "--publish", f"{host_port}:{GUEST_PORT}", "--id-only"
    )  # policy off: the published port is the only way in
    assert made.returncode == 0, made.stderr
    task_id = made.stdout.strip()
    start_server = [
        "task", "exec", task_id, "--",
        f"setsid nohup perl -e '{SERVER}' {GUEST_PORT} >/dev/null 2>&1 & "
        "for i in $(seq 100); do [ -e /tmp/ready ] && exit 0; sleep 0.1; done; exit 1",
    ]  # fmt: skip
    try:
        status = pyro_cli("task", "status", task_id)
        assert f"network:       off; 127.0.0.1:{host_port} -> guest {GUEST_PORT}" in status.stdout
        as_json = json.loads(pyro_cli("task", "status", task_id, "--json").stdout)
        assert as_json["task"]["network"]["publish"] == [{"host": host_port, "guest": GUEST_PORT}]

        started = pyro_cli(*start_server)
        assert started.returncode == 0, started.stderr
        assert fetch(host_port) == "hello from the task\n"

        assert pyro_cli("task", "stop", task_id).returncode == 0
        assert port_is_free(host_port)  # the VMM's forward went with it
        assert pyro_cli("task", "start", task_id).returncode == 0
        started = pyro_cli(*start_server)  # processes do not survive a stop; the port does
        assert started.returncode == 0, started.stderr
        assert fetch(host_port) == "hello from the task\n"
    finally:
        deleted = pyro_cli("task", "delete", task_id)
    assert deleted.returncode == 0, deleted.stderr
    assert vmm_processes(task_id) == []
    assert port_is_free(host_port)


def test_a_taken_host_port_is_a_clear_error_and_leaves_no_task(
    guest_install: Any, pyro_state: Path
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(NetworkError, match=f"127.0.0.1:{port}: the port is already in use"):
            pyro.create_task(ENV, network="egress", publish=[(port, 80)])
    assert pyro.list_tasks() == []
    # Bad policies are refused before anything boots, with the same words on every face.
    with pytest.raises(UsageError, match="'allow' is only valid with policy 'allowlist'"):
        pyro.create_task(ENV, network="egress", allow=["example.org"])
    cli = pyro_cli("task", "create", ENV, "--publish", "8080")
    assert cli.returncode == 2 and "'8080' is not HOST:GUEST" in cli.stderr
    assert pyro.list_tasks() == []


async def mcp_session(host_port: int, server_port: int) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "pyro.cli", "mcp", "serve"], env=env, cwd=ROOT
    )
    seen: dict[str, Any] = {}
    async with Client(params) as client:
        for key, args in {
            "bad_policy": {"network": "open"},
            "bad_port": {"publish": ["70000:80"]},
            "too_many": {"publish": [f"{20000 + i}:80" for i in range(33)]},
            "bad_shape": {"publish": ["8080"]},
        }.items():
            seen[key] = await client.call_tool("task_create", {"environment": ENV, **args})
        made = await client.call_tool(
            "task_create",
            {"environment": ENV, "network": "egress", "publish": [f"{host_port}:{GUEST_PORT}"]},
        )
        seen["made"] = made
        task_id = made.structured_content["id"]
        try:
            seen["status"] = await client.call_tool("task_status", {"task_id": task_id})
            seen["egress"] = await client.call_tool(
                "task_exec",
                {"task_id": task_id, "command": ["bash", "-c", GET, "10.0.2.2", str(server_port)]},
            )
        finally:
            seen["deleted"] = await client.call_tool("task_delete", {"task_id": task_id})
    return seen


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def test_mcp_task_create_takes_the_policy_and_refuses_bad_ones(
    guest_install: Any, pyro_state: Path, host_servers: tuple[int, int]
) -> None:
    import anyio

    host_port = free_port()
    seen = anyio.run(mcp_session, host_port, host_servers[0])
    expected = {
        "bad_policy": "network policy 'open' is not one of: off, egress, allowlist",
        "bad_port": "publish.0.host 70000: Input should be less than or equal to 65535",
        "too_many": "a task takes at most 32 published ports, not 33",
        "bad_shape": "published port '8080' is not HOST:GUEST",
    }
    for key, message in expected.items():
        assert seen[key].is_error and message in text_of(seen[key]), text_of(seen[key])
    assert not seen["made"].is_error, text_of(seen["made"])
    network = seen["status"].structured_content["network"]
    assert network == {
        "policy": "egress",
        "allow": [],
        "publish": [{"host": host_port, "guest": GUEST_PORT}],
    }
    out = seen["egress"].structured_content
    assert out["stdout"] == f"hello from host port {host_servers[0]}\n", out["stderr"]
    assert seen["deleted"].structured_content["deleted"] is True
    assert Pyro(state_dir=pyro_state).list_tasks() == []
