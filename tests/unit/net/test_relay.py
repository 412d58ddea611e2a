"""The allowlist relay: copies both directions and half-closes, ends with its VM's QEMU,
reads destinations as the kernel would, refuses names that lead to loopback, link-local or
metadata addresses, and says nothing to the guest (real sockets on 127.0.0.1 only)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyro.net import relay as relay_mod
from pyro.net.relay import (
    RELAY_USAGE_EXIT,
    Refused,
    connect,
    destinations,
    ipv4_literal,
    kill_relays,
    relay,
    special_reason,
)
from pyro.net.slirp import RELAY

TAG = "pyro-relaytestvm"


def test_relay_copies_both_ways_and_propagates_eof() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    guest_side, relay_side = socket.socketpair()
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            received.append(data)
            conn.sendall(b"pong:" + data[:4])

    thread = threading.Thread(target=serve)
    thread.start()
    target = socket.create_connection(("127.0.0.1", port))
    worker = threading.Thread(target=relay, args=(relay_side, target))
    worker.start()
    payload = b"ping" + b"x" * 300_000
    guest_side.sendall(payload)
    guest_side.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := guest_side.recv(65536):
        answer += chunk
    worker.join(10)
    thread.join(10)
    for sock in (guest_side, relay_side, target, server):
        sock.close()
    assert received == [payload]
    assert answer == b"pong:ping"


class FakeVMM:
    """A process carrying a VM's tag on its command line, with QEMU's pidfile and log in
    its folder: what a relay started by slirp finds in its working directory."""

    def __init__(self, folder: Path, tag: str = TAG) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", "-name", tag]
        )
        (folder / "vmm.pid").write_text(f"{self.proc.pid}\n")
        (folder / "vmm.log").write_text("")

    def exit(self) -> None:
        self.proc.kill()
        self.proc.wait()

    @property
    def log(self) -> str:
        return (self.folder / "vmm.log").read_text()


@pytest.fixture
def vmm(tmp_path: Path) -> Iterator[FakeVMM]:
    fake = FakeVMM(tmp_path)
    try:
        yield fake
    finally:
        fake.exit()


def start_relay(folder: Path, guest: socket.socket, *args: str) -> subprocess.Popen[bytes]:
    """The relay as slirp starts it: the guest's connection on stdin, stdout and stderr."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(RELAY), *args],
        cwd=folder,
        stdin=guest.fileno(),
        stdout=guest.fileno(),
        stderr=guest.fileno(),
    )


class Listener:
    """A loopback server that accepts connections and never closes them (or reads them)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.got = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)
            if conn.recv(1):
                self.got.set()

    def connections(self) -> int:
        return len(self.held)

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def guest_hears(guest: socket.socket) -> bytes:
    """Everything the relay sent to the guest's side, once the relay has exited."""
    guest.setblocking(False)
    try:
        return guest.recv(65536)
    except BlockingIOError:
        return b""


@pytest.mark.hostile
def test_relay_ends_with_its_vmm_when_the_destination_never_closes(
    tmp_path: Path, vmm: FakeVMM
) -> None:
    listener = Listener()
    guest, relay_side = socket.socketpair()
    try:
        proc = start_relay(tmp_path, relay_side, TAG, "127.0.0.1", str(listener.port))
        relay_side.close()
        guest.sendall(b"hello")
        guest.shutdown(socket.SHUT_WR)  # the guest is done; the destination never is
        assert listener.got.wait(30), vmm.log
        assert proc.poll() is None  # relaying: nothing ended the connection
        vmm.exit()
        assert proc.wait(timeout=30) == 0  # ended by its VMM's exit alone
    finally:
        guest.close()
        listener.close()


@pytest.mark.hostile
def test_relay_of_a_vm_that_is_gone_does_not_connect(tmp_path: Path, vmm: FakeVMM) -> None:
    listener = Listener()
    guest, relay_side = socket.socketpair()
    try:
        # The pidfile names a live process without this VM's tag (a PID reused).
        proc = start_relay(tmp_path, relay_side, "pyro-othervm", "127.0.0.1", str(listener.port))
        relay_side.close()
        assert proc.wait(timeout=30) == 1
        vmm.exit()
        (tmp_path / "vmm.pid").unlink()  # no VMM at all
        guest2, relay_side2 = socket.socketpair()
        with guest2:
            proc = start_relay(tmp_path, relay_side2, TAG, "127.0.0.1", str(listener.port))
            relay_side2.close()
            assert proc.wait(timeout=30) == 1
        assert "pyro-othervm is not running here" in (tmp_path / "vmm.log").read_text()
        assert listener.connections() == 0
    finally:
        guest.close()
        listener.close()


@pytest.mark.hostile
def test_relay_refuses_a_name_that_resolves_to_loopback(tmp_path: Path, vmm: FakeVMM) -> None:
    listener = Listener()
    guest, relay_side = socket.socketpair()
    try:
        # "localhost" resolves to 127.0.0.1 on every host: a name pointing at the host.
        proc = start_relay(tmp_path, relay_side, TAG, "localhost", str(listener.port))
        relay_side.close()
        assert proc.wait(timeout=30) == 1
        assert listener.connections() == 0
        assert "refused localhost" in vmm.log and "a loopback address" in vmm.log
        assert guest_hears(guest) == b""
    finally:
        guest.close()
        listener.close()


@pytest.mark.hostile
def test_relay_errors_go_to_the_vmm_log_not_to_the_guest(tmp_path: Path, vmm: FakeVMM) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    guest, relay_side = socket.socketpair()
    with guest:
        proc = start_relay(tmp_path, relay_side, TAG, "127.0.0.1", str(port))
        relay_side.close()
        assert proc.wait(timeout=30) == 1
        assert guest_hears(guest) == b""  # no host error text reaches the guest
    assert f"cannot connect to 127.0.0.1:{port}" in vmm.log


def test_relay_script_usage(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(RELAY), "127.0.0.1", "80"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == RELAY_USAGE_EXIT
    assert proc.stdout == proc.stderr == b""  # nothing said on the guest's connection


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("169.254.43518", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("example.com", None),
        ("1e100.net", None),
        ("127.0.0.1.nip.io", None),
        ("", None),
        ("1.2.3.4.5", None),
    ],
)
def test_ipv4_literals_read_as_inet_aton_reads_them(host: str, expected: str | None) -> None:
    assert ipv4_literal(host) == expected
    if expected is not None:  # what connect() itself would reach
        assert socket.getaddrinfo(host, 1, socket.AF_INET)[0][4][0] == expected


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("::ffff:169.254.169.254", "metadata"),
        ("93.184.216.34", None),
        ("10.0.0.1", None),
        ("2606:4700::1111", None),
    ],
)
def test_special_addresses(address: str, reason: str | None) -> None:
    found = special_reason(address)
    assert (found is None) if reason is None else (reason in str(found))


def fake_resolver(*answers: list[str]) -> Any:
    """A getaddrinfo that answers each call with the next list of addresses."""
    calls: list[str] = []

    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        addresses = answers[min(len(calls), len(answers) - 1)]
        calls.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.hostile
def test_a_name_never_leads_to_special_addresses() -> None:
    resolve = fake_resolver(["169.254.169.254", "127.0.0.1"])
    with pytest.raises(Refused, match=r"metadata.*name that address"):
        destinations("evil.example", 80, resolve=resolve)
    mixed = fake_resolver(["127.0.0.1", "93.184.216.34"])
    assert [d[4][0] for d in destinations("cdn.example", 80, resolve=mixed)] == ["93.184.216.34"]


def test_an_address_named_in_the_allowlist_is_not_resolved() -> None:
    resolve = fake_resolver(["93.184.216.34"])
    assert destinations("127.0.0.1", 8080, resolve=resolve)[0][4] == ("127.0.0.1", 8080)
    assert destinations("169.254.169.254", 80, resolve=resolve)[0][4][0] == "169.254.169.254"
    assert resolve.calls == []


@pytest.mark.hostile
def test_connect_uses_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS rebinding: the first answer is harmless, a second lookup would say loopback.
    # The relay looks up once and connects to what it checked.
    resolve = fake_resolver(["192.0.2.1"], ["127.0.0.1"])
    tried: list[Any] = []

    class Recorder(socket.socket):
        def connect(self, address: Any) -> None:
            tried.append(address)
            raise ConnectionRefusedError("test")

    monkeypatch.setattr(relay_mod.socket, "socket", Recorder)
    with pytest.raises(ConnectionRefusedError):
        connect("rebind.example", 443, resolve=resolve)
    assert tried == [("192.0.2.1", 443)] and resolve.calls == ["rebind.example"]


def test_kill_relays_kills_only_that_vms_relays(tmp_path: Path) -> None:
    sleeper = "import time; time.sleep(600)"
    script = str(tmp_path / "relay.py")
    ours = subprocess.Popen([sys.executable, "-c", sleeper, script, "pyro-vmq", "h", "1"])
    theirs = subprocess.Popen([sys.executable, "-c", sleeper, script, "pyro-vmz", "h", "1"])
    try:
        assert kill_relays("vmq") == [ours.pid]
        assert ours.wait(timeout=30) == -signal.SIGKILL
        assert theirs.poll() is None
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()
