"""Guest networking on real guests (debian:12 under QEMU): off, egress, allowlist, publish.

Every connection's host end is 127.0.0.1: the guest reaches the host's loopback at
10.0.2.2 (slirp), and published guest ports appear on 127.0.0.1 of the host.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import NetworkError
from pyro.guest.build import build_agent_initrd
from pyro.guest.client import AgentClient
from pyro.machines.registry import VMRegistry, VMState

pytestmark = pytest.mark.guest

#: bash's /dev/tcp: an HTTP GET with tools every Debian image has. Prints the body's last line.
GET = (
    'exec 3<>"/dev/tcp/$0/$1" || exit 7; '
    'printf "GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n" >&3; timeout 20 cat <&3 | tail -n 1'
)
#: A one-connection-at-a-time HTTP server in perl (perl-base is in every Debian image).
GUEST_SERVER = (
    "use IO::Socket::INET; $s = IO::Socket::INET->new(LocalPort => $ARGV[0], Listen => 8, "
    'ReuseAddr => 1) or die "listen: $!"; open(F, ">/tmp/ready"); close F; '
    "while ($c = $s->accept) { while (<$c>) { last if /^\\r?$/ } "
    'print $c "HTTP/1.0 200 OK\\r\\n\\r\\nhello from the guest\\n"; close $c }'
)


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
    """Two HTTP servers on 127.0.0.1 (ephemeral ports)."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(10)


class Guest:
    """One VM with a network policy, booted through the VM registry."""

    def __init__(self, install: Any, state: Path, network: dict[str, Any]) -> None:
        self.registry = VMRegistry(state)
        record = self.registry.create(
            environment="debian:12",
            environment_digest=install.digest,
            kernel=install.kernel,
            initrd=build_agent_initrd(),
            rootfs=install.rootfs,
            backend="qemu-tcg",
            vcpus=1,
            memory_mib=256,
            ephemeral=True,
            network=network,
        )
        self.id = record.id
        self.client: AgentClient | None = None

    def __enter__(self) -> Guest:
        try:
            _, self.client = self.registry.start(self.id)
        except BaseException:
            self.registry.delete(self.id)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        self.registry.delete(self.id)

    def sh(self, script: str, *args: str) -> tuple[int | None, str]:
        assert self.client is not None
        result = self.client.exec(["bash", "-c", script, *map(str, args)], timeout_s=60)
        return result.exit_code, (result.stdout + result.stderr).decode(errors="replace")


def test_off_has_only_loopback(guest_install: Any, pyro_state: Path, host_servers: Any) -> None:
    with Guest(guest_install, pyro_state, {"policy": "off"}) as guest:
        code, out = guest.sh("ls /sys/class/net; cat /sys/class/net/lo/operstate")
        assert code == 0 and out.split()[0] == "lo" and "eth0" not in out
        code, out = guest.sh(GET, "10.0.2.2", str(host_servers[0]))
        assert code == 7, out
        assert "unreachable" in out.lower()


def test_egress_reaches_the_host_loopback(
    guest_install: Any, pyro_state: Path, host_servers: Any
) -> None:
    first, second = host_servers
    with Guest(guest_install, pyro_state, {"policy": "egress"}) as guest:
        assert guest.sh(GET, "10.0.2.2", first) == (0, f"hello from host port {first}\n")
        assert guest.sh(GET, "10.0.2.2", second) == (0, f"hello from host port {second}\n")
        assert guest.sh("cat /etc/resolv.conf") == (0, "nameserver 10.0.2.3\n")
    record = guest.registry.list()
    assert record == []  # deleted on exit


@pytest.mark.hostile
def test_allowlist_reaches_only_the_listed_destination(
    guest_install: Any, pyro_state: Path, host_servers: Any
) -> None:
    first, second = host_servers
    name = socket.gethostname()
    names_loopback = socket.gethostbyname(name).startswith("127.")
    allow = [f"127.0.0.1:{first}"] + ([f"{name}:{first}"] if names_loopback else [])
    with Guest(guest_install, pyro_state, {"policy": "allowlist", "allow": allow}) as guest:
        record = guest.registry.get(guest.id)
        assert record.network == {"policy": "allowlist", "allow": allow}
        # Listed: reached, more than once (one relay per connection).
        for _ in range(2):
            assert guest.sh(GET, "10.0.2.2", first) == (0, f"hello from host port {first}\n")
        # Not listed: the second loopback server stays unreachable.
        code, out = guest.sh(GET, "10.0.2.2", second)
        assert code == 7 and "refused" in out.lower(), out
        # No DNS server: names outside the allowlist do not resolve at all.
        code, out = guest.sh("getent hosts deb.debian.org")
        assert code == 2, out
        if names_loopback:
            # A listed name resolves (via /etc/hosts) to its forward and reaches the server.
            code, out = guest.sh("getent hosts " + name)
            assert code == 0 and out.split()[0] == "10.0.2.100", out
            # The image's own entries stay; ours are marked so the next boot replaces them.
            code, out = guest.sh("cat /etc/hosts")
            assert "127.0.0.1\tlocalhost" in out and f"\t{name}\t# pyro-net" in out
            # But a name never leads to a loopback address (only an address named in the
            # allowlist does): the relay refuses it, and says so in QEMU's log only.
            code, out = guest.sh(GET, name, first)
            assert "hello" not in out, out
            log = (guest.registry.dir(guest.id) / "vmm.log").read_text()
            assert f"refused {name}:{first}" in log and "a loopback address" in log


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_published_guest_port_is_reached_from_the_host(
    guest_install: Any, pyro_state: Path
) -> None:
    port = free_port()
    network = {"policy": "off", "publish": [{"host": port, "guest": 8000}]}
    with Guest(guest_install, pyro_state, network) as guest:
        assert guest.client is not None
        started = guest.client.exec(
            ["setsid", "-f", "perl", "-e", GUEST_SERVER, "8000"], timeout_s=30
        )
        assert started.exit_code == 0, started.stderr
        code, out = guest.sh("for i in $(seq 200); do [ -e /tmp/ready ] && exit 0; sleep 0.1; done")
        assert code == 0, out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.read() == b"hello from the guest\n"
        # Policy off with a published port: the guest itself still reaches nothing.
        code, out = guest.sh(GET, "10.0.2.2", port)
        assert code == 7, out


def test_published_port_conflict_fails_before_boot(guest_install: Any, pyro_state: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    guest = Guest(
        guest_install, pyro_state, {"policy": "egress", "publish": [{"host": port, "guest": 80}]}
    )
    try:
        with pytest.raises(NetworkError, match=f"127.0.0.1:{port}.*already in use"):
            guest.__enter__()
        record = guest.registry.list()
        assert record == []  # nothing was booted, and the record is gone again
    finally:
        taken.close()
        guest.registry.delete(guest.id)


def test_sdk_run_with_egress(guest_install: Any, pyro_state: Path, host_servers: Any) -> None:
    from pyro import Pyro

    first, _ = host_servers
    result = Pyro().run_in_vm(
        "debian:12", ["bash", "-c", GET, "10.0.2.2", str(first)], network="egress"
    )
    assert result.exit_code == 0, result
    assert result.exec_steps()[-1].stdout == f"hello from host port {first}\n"


def test_sdk_run_without_network_cannot_connect(
    guest_install: Any, pyro_state: Path, host_servers: Any
) -> None:
    from pyro import Pyro

    first, _ = host_servers
    result = Pyro().run_in_vm("debian:12", ["bash", "-c", GET, "10.0.2.2", str(first)])
    assert result.exit_code == 7
    assert record_states(pyro_state) == []


def record_states(state: Path) -> list[VMState]:
    return [r.state for r in VMRegistry(state).list()]


def test_restarted_vm_keeps_one_copy_of_its_host_entries(
    guest_install: Any, pyro_state: Path
) -> None:
    registry = VMRegistry(pyro_state)
    record = registry.create(
        environment="debian:12",
        environment_digest=guest_install.digest,
        kernel=guest_install.kernel,
        initrd=build_agent_initrd(),
        rootfs=guest_install.rootfs,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=256,
        network={"policy": "allowlist", "allow": ["pkg.example:443"]},
    )
    try:
        for _ in range(2):
            _, client = registry.start(record.id)
            with client:
                hosts = client.exec(["cat", "/etc/hosts"], timeout_s=30).stdout.decode()
                client.exec(["sync"], timeout_s=30)
            registry.stop(record.id)
            assert hosts.count("pkg.example") == 1, hosts
            assert "10.0.2.100\tpkg.example\t# pyro-net" in hosts
    finally:
        registry.delete(record.id)


def _boot_mode(result: Any) -> str:
    boot = next(step for step in result.steps if step.action == "boot")
    return str(boot.message).rsplit(", ", 1)[1].rstrip(")")


def test_egress_runs_restore_a_guest_saved_with_egress(
    guest_install: Any, pyro_state: Path, host_servers: Any
) -> None:
    """An egress run saves (or finds) an egress snapshot; the next one restores it, reaches
    the host through the restored user-mode network, and is a guest of its own."""
    from pyro import Pyro

    first, second = host_servers
    pyro = Pyro()
    command = ["bash", "-c", GET + "; cat /proc/sys/kernel/random/uuid", "10.0.2.2"]
    warm = []
    for port in (first, second, first):
        result = pyro.run_in_vm("debian:12", [*command, str(port)], network="egress")
        assert result.exit_code == 0, result
        lines = result.exec_steps()[-1].stdout.splitlines()
        assert lines[0] == f"hello from host port {port}"
        warm.append((_boot_mode(result), lines[1]))
    assert [mode for mode, _ in warm][1:] == ["restore", "restore"], warm
    assert len({uuid for _, uuid in warm}) == 3  # reseeded: no two guests repeat
    # A run without network never restores the egress guest (and cannot connect).
    off = pyro.run_in_vm("debian:12", [*command, str(first)])
    assert off.exit_code == 7 and _boot_mode(off) in ("cold", "restore")
    assert record_states(pyro_state) == []


def test_the_pool_serves_egress_runs(
    guest_install: Any, pyro_state: Path, host_servers: Any
) -> None:
    from pyro import Pyro

    first, _ = host_servers
    with Pyro(warm_pool=1) as pyro:
        modes = []
        for _ in range(4):
            result = pyro.run_in_vm(
                "debian:12", ["bash", "-c", GET, "10.0.2.2", str(first)], network="egress"
            )
            assert result.exec_steps()[-1].stdout == f"hello from host port {first}\n", result
            modes.append(_boot_mode(result))
            if modes[-1] == "pooled":
                break
            assert pyro._warm_pool is not None
            pyro._warm_pool.wait_filled(60)
        assert modes[-1] == "pooled", modes
    assert record_states(pyro_state) == []
