"""A command's stdin streamed to the real C agent (host test mode): windowed, bounded, never
blocking the host when the command does not read it."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pyro.guest.stdin import WINDOW, StdinReadError, acknowledges

if TYPE_CHECKING:
    from conftest import AgentServer

MIB = 1 << 20


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_agent_acknowledges_stdin(agent: AgentServer) -> None:
    assert acknowledges(agent.connect().info.agent_version)
    assert not acknowledges("0.1.0") and not acknowledges("unknown")


def test_file_object_is_streamed_whole(agent: AgentServer, tmp_path: Path) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(os.urandom(20 * MIB + 3))
    with path.open("rb") as stream:
        result = agent.connect().exec(["sha256sum"], stdin=stream)
    assert result.exit_code == 0
    assert result.stdout.split()[0].decode() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_empty_stdin_is_eof(agent: AgentServer) -> None:
    assert agent.connect().exec(["wc", "-c"], stdin=b"").stdout.strip() == b"0"


def test_slow_reader_keeps_the_agent_buffer_bounded(agent: AgentServer) -> None:
    """64 MiB to a command that reads nothing for a while: the agent buffers one window,
    not the input (without acknowledgements its memory would grow by the whole input)."""
    data = b"x" * (64 * MIB)
    before = peak_rss_kib(agent.proc.pid)
    result = agent.connect().exec(["sh", "-c", "sleep 1; wc -c"], stdin=data, timeout_s=60)
    assert result.stdout.strip() == str(len(data)).encode()
    grown_mib = (peak_rss_kib(agent.proc.pid) - before) / 1024
    assert grown_mib < 4 * WINDOW / MIB, f"the agent grew by {grown_mib:.1f} MiB"


def test_command_that_ignores_endless_stdin_returns(agent: AgentServer) -> None:
    read_fd, write_fd = os.pipe()
    stop = threading.Event()

    def produce() -> None:
        with open(write_fd, "wb", buffering=0) as out:
            while not stop.is_set():
                try:
                    out.write(b"y" * 65536)
                except BrokenPipeError:
                    return

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        with open(read_fd, "rb", buffering=0) as source:
            begun = time.monotonic()
            result = agent.connect().exec(["true"], stdin=source, timeout_s=30)
            assert result.exit_code == 0
            assert time.monotonic() - begun < 10
    finally:
        stop.set()


def test_silent_stdin_does_not_hold_a_finished_command(agent: AgentServer) -> None:
    """A pipe nobody writes to: the command exits, the exec returns (the read is left)."""
    read_fd, write_fd = os.pipe()
    try:
        with open(read_fd, "rb", buffering=0) as source:
            begun = time.monotonic()
            result = agent.connect().exec(["echo", "done"], stdin=source, timeout_s=30)
            assert result.stdout == b"done\n"
            assert time.monotonic() - begun < 10
    finally:
        os.close(write_fd)


def test_command_closing_its_input_early(agent: AgentServer) -> None:
    result = agent.connect().exec(["head", "-c", "5"], stdin=b"z" * (50 * MIB), timeout_s=60)
    assert (result.exit_code, result.stdout) == (0, b"zzzzz")


class Broken(io.RawIOBase):
    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 2:
            raise OSError(5, "Input/output error")
        return b"a" * 1000


def test_unreadable_stdin_cancels_the_command(agent: AgentServer) -> None:
    client = agent.connect()
    with pytest.raises(StdinReadError, match="cannot read the command's stdin"):
        client.exec(["cat"], stdin=Broken(), timeout_s=30)
    assert client.exec(["echo", "ok"]).stdout == b"ok\n"  # the connection is still good


def test_text_stream_is_refused(agent: AgentServer) -> None:
    client = agent.connect()
    with pytest.raises(StdinReadError, match="gave str, not bytes"):
        client.exec(["cat"], stdin=io.StringIO("text"), timeout_s=30)  # type: ignore[arg-type]
