"""The allowlist relay copies both directions and half-closes (real sockets on 127.0.0.1)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from pyro.net.relay import RELAY_USAGE_EXIT, relay
from pyro.net.slirp import RELAY


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


def test_relay_script_reports_unreachable_destination() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    a, b = socket.socketpair()
    with a, b:
        proc = subprocess.run(
            [sys.executable, "-I", str(RELAY), "127.0.0.1", str(port)],
            stdin=b.fileno(),
            capture_output=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert b"cannot connect to 127.0.0.1" in proc.stderr


def test_relay_script_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-I", str(RELAY)], capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == RELAY_USAGE_EXIT
