"""Which stdin ``--stdin/--no-stdin`` hands the guest command: pipes and files by default,
never a terminal unless asked, nothing without a descriptor."""

from __future__ import annotations

import io
import os
import pty
import sys
from collections.abc import Iterator

import pytest

from pyro.cli.stdin_flag import command_stdin


@pytest.fixture
def pipe_stdin(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.TextIOWrapper]:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"data")
    os.close(write_fd)
    stream = open(read_fd)  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdin", stream)
    yield stream
    stream.close()


def test_a_pipe_is_forwarded_unless_no_stdin(pipe_stdin: io.TextIOWrapper) -> None:
    forwarded = command_stdin(None)
    assert forwarded is pipe_stdin.buffer and forwarded.read() == b"data"
    assert command_stdin(False) is None
    assert command_stdin(True) is pipe_stdin.buffer


def test_a_terminal_is_forwarded_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    leader, follower = pty.openpty()
    with open(follower) as stream:
        monkeypatch.setattr(sys, "stdin", stream)
        try:
            assert command_stdin(None) is None
            assert command_stdin(True) is stream.buffer
        finally:
            os.close(leader)


def test_no_descriptor_means_no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x")))
    assert command_stdin(None) is None
    monkeypatch.setattr(sys, "stdin", None)
    assert command_stdin(True) is None
