"""Persistent processes (shells on a PTY, services on a pipe) and PROBE of the REAL C agent in
host test mode (--listen-unix)."""

from __future__ import annotations

import errno
import http.server
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from pyro.errors import UsageError
from pyro.guest.client import AgentClient, GuestRequestError
from pyro.guest.procs import PROC_MAX, ProcOutput
from pyro.guest.protocol import Fields, Frame, FrameType, Tag, encode_tlv

if TYPE_CHECKING:
    from conftest import AgentServer


def read_until(client: AgentClient, name: str, pattern: bytes, seconds: float = 10) -> bytes:
    """Everything the process printed from offset 0 until ``pattern`` shows up."""
    out, cursor = b"", 0
    end = time.monotonic() + seconds
    while pattern not in out:
        assert time.monotonic() < end, f"{pattern!r} never came; got {out[-400:]!r}"
        got = client.proc_read(name, cursor, wait_s=1.0)
        out += got.data
        cursor = got.cursor
        if not got.data and got.state.eof:
            break
    assert pattern in out, out[-400:]
    return out


def read_to_eof(client: AgentClient, name: str, cursor: int = 0) -> ProcOutput:
    end = time.monotonic() + 10
    while True:
        got = client.proc_read(name, cursor, wait_s=1.0)
        if got.state.eof and not got.state.running and got.cursor == got.state.end:
            return got
        assert time.monotonic() < end, got
        if got.state.eof and not got.state.running:
            cursor = got.cursor
        time.sleep(0.02)


def test_shell_gets_a_terminal_with_its_window_size(agent: AgentServer) -> None:
    client = agent.connect()
    pid = client.spawn("sh1", ["sh"], pty=True, rows=33, cols=101)
    assert pid > 0
    client.proc_write("sh1", b"tty; stty size; echo TERM=$TERM; echo mark-$((0+1))\n")
    out = read_until(client, "sh1", b"mark-1\r\n")
    assert re.search(rb"/dev/pts/\d+", out), out
    assert b"33 101" in out
    assert b"TERM=xterm-256color" in out
    client.proc_resize("sh1", 40, 120)
    client.proc_write("sh1", b"stty size; echo mark-$((1+1))\n")
    assert b"40 120" in read_until(client, "sh1", b"mark-2\r\n")


def test_signal_reaches_the_foreground_job_and_the_shell_survives(agent: AgentServer) -> None:
    client = agent.connect()
    client.spawn("sh1", ["sh", "-i"], pty=True)
    client.proc_write("sh1", b"sleep 987.65\n")
    assert _wait(lambda: bool(_procs_with("987.65")))
    client.proc_signal("sh1", signal.SIGINT)
    assert _wait(lambda: not _procs_with("987.65"))
    client.proc_write("sh1", b"echo done-$?\n")
    read_until(client, "sh1", b"done-130")
    client.proc_write("sh1", b"echo al''ive\n")
    read_until(client, "sh1", b"alive\r\n")
    assert client.proc_list()[0].running


def test_ctrl_c_byte_interrupts_like_a_terminal(agent: AgentServer) -> None:
    client = agent.connect()
    client.spawn("sh1", ["sh", "-i"], pty=True)
    client.proc_write("sh1", b"sleep 876.12\n")
    assert _wait(lambda: bool(_procs_with("876.12")))
    client.proc_write("sh1", b"\x03")
    assert _wait(lambda: not _procs_with("876.12"))
    client.proc_write("sh1", b"echo rc-$?\n")
    read_until(client, "sh1", b"rc-130")


def test_processes_survive_a_host_reconnect(agent: AgentServer) -> None:
    first = agent.connect()
    first.spawn("svc", ["sh", "-c", "echo before; sleep 0.3; echo after; exec sleep 765.4"])
    first.spawn("sh1", ["sh"], pty=True)
    first.close()
    time.sleep(0.5)  # the hang-up is handled, and "after" is printed with nobody connected
    second = agent.connect()
    assert [p.name for p in second.proc_list()] == ["sh1", "svc"]
    assert all(p.running for p in second.proc_list())
    assert read_until(second, "svc", b"after\n") == b"before\nafter\n"
    second.proc_write("sh1", b"echo still''-here\n")
    read_until(second, "sh1", b"still-here\r\n")
    assert _procs_with("765.4")


def test_service_output_merges_stdout_and_stderr_in_order(agent: AgentServer) -> None:
    client = agent.connect()
    client.spawn("svc", ["sh", "-c", "echo one; echo two >&2; echo three; exit 3"])
    got = read_to_eof(client, "svc")
    assert client.proc_read("svc", 0).data == b"one\ntwo\nthree\n"
    assert (got.state.running, got.state.exit_code, got.state.signal) == (False, 3, None)
    with pytest.raises(GuestRequestError) as info:
        client.proc_write("svc", b"x")
    assert info.value.errno == errno.ENOTTY


def test_a_read_answers_with_what_was_written_before_it_came(
    agent: AgentServer, tmp_path: Path
) -> None:
    # The agent is stopped while the service writes and the READ arrives: when it runs
    # again both are pending, and the answer must hold the output (the request is read
    # first in the agent's loop).
    client = agent.connect()
    go, wrote = tmp_path / "go", tmp_path / "wrote"
    script = f"while [ ! -e {go} ]; do sleep 0.01; done; echo written-first; touch {wrote}; "
    client.spawn("svc", ["sh", "-c", script + "exec sleep 30"])
    replies: list[ProcOutput] = []
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        go.touch()
        assert _wait(wrote.exists)
        reader = threading.Thread(target=lambda: replies.append(client.proc_read("svc", 0)))
        reader.start()
        time.sleep(0.3)  # the request is in the agent's socket, unread
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    reader.join(10)
    assert [reply.data for reply in replies] == [b"written-first\n"]


def test_ring_overflow_is_reported_never_silent(agent: AgentServer) -> None:
    client = agent.connect()
    script = "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"
    client.spawn("svc", ["sh", "-c", script], ring_bytes=4096)
    expected = b"".join(b"line-%d\n" % i for i in range(2000))
    got = read_to_eof(client, "svc")
    assert got.state.end == len(expected)
    whole = client.proc_read("svc", 0)
    assert whole.first == len(expected) - 4096
    assert whole.missed == whole.first
    assert whole.data == expected[-4096:]
    assert whole.cursor == len(expected)
    # A cursor inside what is still held reads on from there, nothing missed.
    part = client.proc_read("svc", len(expected) - 100, max_bytes=30)
    assert (part.data, part.missed, part.cursor) == (expected[-100:-70], 0, len(expected) - 70)
    assert client.proc_read("svc", len(expected)).data == b""
    with pytest.raises(GuestRequestError) as info:
        client.proc_read("svc", len(expected) + 1)
    assert info.value.errno == errno.EINVAL


def test_long_poll_read_returns_when_output_comes(agent: AgentServer) -> None:
    client = agent.connect()
    client.spawn("svc", ["sh", "-c", "sleep 0.5; echo late; exec sleep 60"])
    began = time.monotonic()
    got = client.proc_read("svc", 0, wait_s=20)
    assert got.data == b"late\n"
    assert time.monotonic() - began < 10
    began = time.monotonic()
    assert client.proc_read("svc", got.cursor, wait_s=0.3).data == b""  # the wait runs out
    assert time.monotonic() - began >= 0.25


def test_process_count_is_capped_and_remove_frees_a_slot(agent: AgentServer) -> None:
    client = agent.connect()
    for i in range(PROC_MAX):
        client.spawn(f"p{i}", ["sleep", "654.3"], ring_bytes=4096)
    with pytest.raises(GuestRequestError) as info:
        client.spawn("one-more", ["true"])
    assert info.value.errno == errno.EAGAIN
    assert len(client.proc_list()) == PROC_MAX
    client.proc_remove("p0")
    client.spawn("one-more", ["true"])
    for i in range(1, PROC_MAX):
        client.proc_remove(f"p{i}")
    assert _wait(lambda: not _procs_with("654.3"))


def test_duplicate_and_unknown_names(agent: AgentServer) -> None:
    client = agent.connect()
    client.spawn("svc", ["sleep", "60"])
    with pytest.raises(GuestRequestError) as info:
        client.spawn("svc", ["true"])
    assert info.value.errno == errno.EEXIST
    for call in (
        lambda: client.proc_read("nope"),
        lambda: client.proc_write("nope", b"x"),
        lambda: client.proc_signal("nope", 15),
        lambda: client.proc_remove("nope"),
        lambda: client.proc_resize("nope", 10, 10),
    ):
        with pytest.raises(GuestRequestError) as info:
            call()
        assert info.value.errno == errno.ENOENT
        assert "nope" in str(info.value)


def test_remove_kills_the_whole_process_group(agent: AgentServer) -> None:
    client = agent.connect()
    client.spawn("svc", ["sh", "-c", "sleep 543.21 & sleep 543.21; wait"])
    assert _wait(lambda: len(_procs_with("543.21")) >= 3)  # sh and two sleeps
    client.proc_remove("svc")
    assert _wait(lambda: not _procs_with("543.21"))
    assert client.proc_list() == []


@pytest.mark.parametrize("name", ["", "Upper", "-dash", ".dot", "a" * 65, "sp ace", "é"])
def test_bad_names_are_refused_by_host_and_agent(agent: AgentServer, name: str) -> None:
    client = agent.connect()
    with pytest.raises(UsageError):
        client.spawn(name, ["true"])
    # The agent checks on its own (a host is not trusted to have checked).
    reply = _raw(agent, FrameType.SPAWN, [(Tag.NAME, name), (Tag.ARG, "true")])
    assert reply.type == FrameType.ERROR
    assert Fields(reply.payload).int(Tag.ERRNO) == errno.EINVAL


@pytest.mark.parametrize(
    ("ftype", "fields"),
    [
        (FrameType.READ, [(Tag.NAME, "svc"), (Tag.CURSOR, -1)]),
        (FrameType.READ, [(Tag.NAME, "svc"), (Tag.MAX, 0)]),
        (FrameType.READ, [(Tag.NAME, "svc"), (Tag.MAX, 1 << 30)]),
        (FrameType.READ, [(Tag.NAME, "svc"), (Tag.WAIT_MS, 10**9)]),
        (FrameType.RESIZE, [(Tag.NAME, "svc"), (Tag.ROWS, 0), (Tag.COLS, 80)]),
        (FrameType.KILL, [(Tag.NAME, "svc"), (Tag.SIGNAL, 999)]),
        (FrameType.SPAWN, [(Tag.NAME, "x"), (Tag.ARG, "true"), (Tag.RING, 1 << 40)]),
        (FrameType.SPAWN, [(Tag.NAME, "x"), (Tag.ARG, "true"), (Tag.ROWS, -5)]),
        (FrameType.SPAWN, [(Tag.NAME, "x")]),
        (FrameType.PROBE, [(Tag.PORT, 70000)]),
        (FrameType.PROBE, [(Tag.PORT, 80), (Tag.PATH, "no-slash")]),
    ],
)
def test_agent_checks_every_size_from_the_host(
    agent: AgentServer, ftype: FrameType, fields: list[tuple[Tag, int | str]]
) -> None:
    agent.connect().spawn("svc", ["sh"], pty=True)
    reply = _raw(agent, ftype, fields)
    assert reply.type == FrameType.ERROR, reply
    assert Fields(reply.payload).int(Tag.ERRNO) == errno.EINVAL


def test_probe_tcp_and_http(agent: AgentServer) -> None:
    client = agent.connect()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert client.probe(port) == 0
        assert client.probe(port, "/") == 200
        assert client.probe(port, "/no-such-file") == 404
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free_port = closed.getsockname()[1]
    with pytest.raises(GuestRequestError) as info:
        client.probe(free_port)
    assert info.value.errno == errno.ECONNREFUSED


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_spawn_as_another_user_owns_its_terminal(agent: AgentServer) -> None:
    """SPAWN's UID/GID run a shell as that user (what an image's User becomes), as EXEC's
    do, and the user owns its terminal."""
    client = agent.connect()
    client.spawn("sh1", ["sh"], pty=True, uid=65534, gid=65533, cwd="/")
    client.proc_write(
        "sh1", b"echo u=$(id -u) g=$(id -G) h=$HOME t=$(stat -c %u /proc/self/fd/0)\n"
    )
    assert b"u=65534 g=65533 h=/ t=65534\r\n" in read_until(client, "sh1", b"t=65534\r\n")
    client.spawn("svc", ["sh", "-c", "id -u; id -g"], uid=65534, gid=65533, cwd="/")
    assert read_to_eof(client, "svc").data == b"65534\n65533\n"


def test_cancel_ends_a_waiting_read(agent: AgentServer) -> None:
    """A CANCEL (what the session keeper sends for a client that went away) ends a long-poll
    READ at once, so its waiter slot and request id are free again."""
    client = agent.connect()
    client.spawn("quiet", ["sleep", "600"])
    mux = client._mux
    req = mux.open()
    try:
        mux.send(
            FrameType.READ, req.request_id, encode_tlv([(Tag.NAME, "quiet"), (Tag.WAIT_MS, 50_000)])
        )
        time.sleep(0.2)
        started = time.monotonic()
        mux.send(FrameType.CANCEL, req.request_id)
        reply = mux.next(req, time.monotonic() + 10, "a cancelled read")
    finally:
        mux.finish(req)
    assert time.monotonic() - started < 5
    assert reply.type == FrameType.ERROR
    assert Fields(reply.payload).int(Tag.ERRNO) == errno.ECANCELED
    assert client.proc_read("quiet", 0).state.running  # the process itself goes on


# -- helpers ----------------------------------------------------------------------------------


def _wait(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def _procs_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(marker in part for part in proc.info.get("cmdline") or []):
            found.append(proc)
    return found


def _raw(agent: AgentServer, ftype: FrameType, fields: list[tuple[Tag, int | str]]) -> Frame:
    """One request sent as raw frames on the current client's connection, bypassing checks."""
    client = agent.clients[-1] if agent.clients else agent.connect()
    mux = client._mux
    req = mux.open()
    try:
        mux.send(ftype, req.request_id, encode_tlv(fields))
        return mux.next(req, time.monotonic() + 10, "a raw request")
    finally:
        mux.finish(req)
