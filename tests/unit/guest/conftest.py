"""Fixtures that run the REAL C agent on the host in test mode (--listen-unix)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from pyro.guest.build import build_agent_binary
from pyro.guest.client import AgentClient


@pytest.fixture(scope="session")
def agent_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A prebuilt agent, e.g. compiled with -fsanitize=address,undefined for a checking run.
    prebuilt = os.environ.get("PYRO_TEST_AGENT_BINARY")
    if prebuilt:
        return Path(prebuilt)
    if not (shutil.which("musl-gcc") or shutil.which("gcc")):
        pytest.skip("no C compiler (musl-gcc or gcc) to build the guest agent")
    return build_agent_binary(tmp_path_factory.mktemp("agent-bin"))


class AgentServer:
    """One agent process listening on a unix socket; connect() gives a hello'ed client."""

    def __init__(self, binary: Path, workdir: Path, prefix: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.socket_path = workdir / "agent.sock"
        argv = [*prefix, str(binary), "--listen-unix", str(self.socket_path)]
        self.proc = subprocess.Popen(argv)
        self.clients: list[AgentClient] = []

    def raw_socket(self) -> socket.socket:
        # The socket file appears at bind(), a moment before listen(): retry until it listens.
        end = time.monotonic() + 20
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise
            time.sleep(0.01)

    def connect(self, **kwargs: float) -> AgentClient:
        client = AgentClient.connect(self.raw_socket(), hello_timeout=10, **kwargs)
        self.clients.append(client)
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        descendants = []
        if self.proc.poll() is None:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.kill()
        self.proc.wait(timeout=10)
        for child in descendants:
            if child.is_running():
                child.kill()
        self.socket_path.unlink(missing_ok=True)


@pytest.fixture
def agent(agent_binary: Path, tmp_path: Path) -> Iterator[AgentServer]:
    server = AgentServer(agent_binary, tmp_path)
    try:
        yield server
    finally:
        server.stop()
