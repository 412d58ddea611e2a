"""The session keeper (pyro.guest.keeper): routing between clients and one agent.

A fake agent peer (a socket pair the test drives frame by frame) checks what the keeper
sends the agent and each client; the last tests run real AgentClients through the keeper to
the REAL C agent in test mode.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyro.guest import keeper as k
from pyro.guest import protocol
from pyro.guest.client import AgentClient
from pyro.guest.protocol import FrameType, Tag, encode_tlv

EXEC = int(FrameType.EXEC)
STDOUT = int(FrameType.STDOUT)
EXIT = int(FrameType.EXIT)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read(sock: socket.socket) -> tuple[int, int, bytes]:
    magic, version, ftype, rid, length = k.HEADER.unpack(recv_exact(sock, k.HEADER_LEN))
    assert (magic, version) == (b"PY", 1)
    return ftype, rid, recv_exact(sock, length) if length else b""


def hello_ok(uptime_ms: int = 1000) -> bytes:
    return encode_tlv([(Tag.VERSION, 1), (Tag.AGENT_VERSION, "fake"), (Tag.UPTIME_MS, uptime_ms)])


class Harness:
    """A keeper on a thread, between a fake agent (``self.agent``) and unix clients."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        keeper_end, self.agent = socket.socketpair()
        self.agent.settimeout(5)
        self.path = tmp_path / "keeper.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(16)
        read_end, self._vmm = os.pipe()
        self.keeper = k.Keeper(keeper_end, listener, read_end, **options)
        self.result: list[str] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.keeper.run()))
        self.thread.daemon = True
        self.thread.start()

    def client(self, *, greet: bool = True) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(self.path))
        if greet:
            sock.sendall(
                k.frame(k.HELLO, 0, protocol.hello_payload(time_ns=1, seed=b"s" * 8, hostname=None))
            )
        return sock

    def greeted_pair(self) -> tuple[socket.socket, socket.socket]:
        """Two clients after their hellos; the agent saw (and answered) one HELLO."""
        a = self.client()
        assert read(self.agent)[0] == k.HELLO
        self.agent.sendall(k.frame(k.HELLO_OK, 0, hello_ok()))
        assert read(a)[0] == k.HELLO_OK
        b = self.client()
        assert read(b)[0] == k.HELLO_OK
        return a, b

    def stop(self) -> None:
        if self._vmm >= 0:
            os.close(self._vmm)  # the "VMM" exits
            self._vmm = -1
        self.thread.join(10)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.stop()


def test_constants_match_the_protocol() -> None:
    assert k.HEADER.format == protocol.HEADER.format
    assert (k.HELLO, k.CANCEL, k.HELLO_OK) == (
        FrameType.HELLO,
        FrameType.CANCEL,
        FrameType.HELLO_OK,
    )
    assert {FrameType.EXIT, FrameType.OK, FrameType.ERROR} == k.ENDS
    assert (k.MAX_PAYLOAD, k.TAG_UPTIME_MS) == (protocol.MAX_PAYLOAD, Tag.UPTIME_MS)


def test_ids_are_remapped_per_client_and_one_hello_reaches_the_agent(harness: Harness) -> None:
    a, b = harness.greeted_pair()
    a.sendall(k.frame(EXEC, 1, b"from a"))
    b.sendall(k.frame(EXEC, 1, b"from b"))
    seen = {}
    for _ in range(2):
        ftype, rid, payload = read(harness.agent)
        assert ftype == EXEC  # the second hello never reached the agent
        seen[payload] = rid
    assert seen[b"from a"] != seen[b"from b"]
    # Replies go back to their own client, under the client's own id.
    harness.agent.sendall(k.frame(STDOUT, seen[b"from b"], b"out b"))
    harness.agent.sendall(k.frame(STDOUT, seen[b"from a"], b"out a"))
    harness.agent.sendall(k.frame(EXIT, seen[b"from a"], b""))
    assert read(a) == (STDOUT, 1, b"out a")
    assert read(a) == (EXIT, 1, b"")
    assert read(b) == (STDOUT, 1, b"out b")
    # After EXIT a's id is free: its next request under id 1 is a new one for the agent.
    a.sendall(k.frame(EXEC, 1, b"again"))
    ftype, rid, payload = read(harness.agent)
    assert payload == b"again" and rid not in (seen[b"from a"], seen[b"from b"])


def test_an_execs_stdin_acknowledgements_do_not_end_it(harness: Harness) -> None:
    """OK frames on an EXEC acknowledge stdin (agent 0.2.0); only EXIT or ERROR end it.
    Ending it at the first OK dropped the EXIT and hung every exec with stdin."""
    a, _ = harness.greeted_pair()
    a.sendall(k.frame(EXEC, 3, b"cat"))
    _, rid, _ = read(harness.agent)
    a.sendall(k.frame(0x03, 3, b"input"))  # STDIN goes to the same request
    assert read(harness.agent) == (0x03, rid, b"input")
    harness.agent.sendall(k.frame(0x85, rid, b"ack 1"))
    harness.agent.sendall(k.frame(0x85, rid, b"ack 2"))
    harness.agent.sendall(k.frame(STDOUT, rid, b"input"))
    harness.agent.sendall(k.frame(EXIT, rid, b""))
    assert [read(a) for _ in range(4)] == [
        (0x85, 3, b"ack 1"),
        (0x85, 3, b"ack 2"),
        (STDOUT, 3, b"input"),
        (EXIT, 3, b""),
    ]
    # Any other request still ends at its OK.
    a.sendall(k.frame(0x0A, 4, b"stat"))
    _, stat_id, _ = read(harness.agent)
    harness.agent.sendall(k.frame(0x85, stat_id, b"done"))
    assert read(a) == (0x85, 4, b"done")
    harness.agent.sendall(k.frame(0x85, stat_id, b"late"))  # dropped: the request ended
    harness.agent.sendall(k.frame(EXIT, rid, b"late"))
    a.sendall(k.frame(EXEC, 5, b"next"))
    read(harness.agent)
    a.settimeout(0.3)
    with pytest.raises(TimeoutError):
        read(a)


def test_a_later_hello_is_answered_with_the_uptime_moved_on(harness: Harness) -> None:
    a = harness.client()
    read(harness.agent)
    harness.agent.sendall(k.frame(k.HELLO_OK, 0, hello_ok(uptime_ms=5000)))
    read(a)
    time.sleep(0.3)
    b = harness.client()
    _, _, payload = read(b)
    uptime = protocol.Fields(payload).int(Tag.UPTIME_MS)
    assert uptime is not None and 5250 <= uptime < 9000
    assert protocol.Fields(payload).str(Tag.AGENT_VERSION) == "fake"


def test_unknown_frame_types_pass_both_ways(harness: Harness) -> None:
    a, _ = harness.greeted_pair()
    a.sendall(k.frame(0x42, 7, b"new request type"))
    ftype, rid, payload = read(harness.agent)
    assert (ftype, payload) == (0x42, b"new request type")
    harness.agent.sendall(k.frame(0xC1, rid, b"new reply type"))
    assert read(a) == (0xC1, 7, b"new reply type")


def test_a_client_that_vanishes_mid_exec_gets_its_requests_cancelled(harness: Harness) -> None:
    a, b = harness.greeted_pair()
    a.sendall(k.frame(EXEC, 1, b"a"))
    b.sendall(k.frame(EXEC, 1, b"b"))
    ids: dict[bytes, int] = {}
    for _ in range(2):
        _, rid, payload = read(harness.agent)
        ids[payload] = rid
    a.close()
    assert read(harness.agent) == (k.CANCEL, ids[b"a"], b"")
    # b's command is untouched and still answered; late frames for a's are dropped.
    harness.agent.sendall(k.frame(STDOUT, ids[b"a"], b"late"))
    harness.agent.sendall(k.frame(EXIT, ids[b"b"], b"done"))
    assert read(b) == (EXIT, 1, b"done")


def test_a_client_sending_garbage_is_dropped_and_its_requests_cancelled(harness: Harness) -> None:
    a, b = harness.greeted_pair()
    a.sendall(k.frame(EXEC, 3, b"x"))
    _, rid, _ = read(harness.agent)
    a.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert read(harness.agent) == (k.CANCEL, rid, b"")
    assert a.recv(1) == b""  # closed
    b.sendall(k.frame(EXEC, 1, b"still served"))
    assert read(harness.agent)[2] == b"still served"


def test_frames_before_a_clients_hello_are_dropped(harness: Harness) -> None:
    a = harness.client(greet=False)
    a.sendall(k.frame(EXEC, 1, b"too early"))
    a.sendall(k.frame(k.HELLO, 0, protocol.hello_payload(time_ns=1, seed=b"", hostname=None)))
    assert read(harness.agent)[0] == k.HELLO  # not the EXEC


def test_a_hostile_agent_flooding_unknown_ids_costs_nothing(harness: Harness) -> None:
    a, _ = harness.greeted_pair()
    flood = k.frame(STDOUT, 0xDEAD, b"x" * 60_000) * 200  # 12 MB for nobody
    sender = threading.Thread(target=harness.agent.sendall, args=(flood,))
    sender.start()
    sender.join(30)
    assert not sender.is_alive()
    a.sendall(k.frame(EXEC, 1, b"after the flood"))
    _, rid, _ = read(harness.agent)
    harness.agent.sendall(k.frame(EXIT, rid, b""))
    assert read(a) == (EXIT, 1, b"")  # nothing of the flood reached the client
    assert harness.keeper.dropped == 200
    assert len(harness.keeper.agent_in) < k.HEADER_LEN + k.MAX_PAYLOAD


def test_a_client_that_never_reads_is_bounded_then_dropped(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_pending=256 * 1024, stall=1.0)
    try:
        slow, fast = h.greeted_pair()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(k.frame(EXEC, 1, b"slow"))
        fast.sendall(k.frame(EXEC, 1, b"fast"))
        ids = {}
        for _ in range(2):
            _, rid, payload = read(h.agent)
            ids[payload] = rid
        chunk = k.frame(STDOUT, ids[b"slow"], b"y" * 65536)
        h.agent.setblocking(False)
        sent = 0
        peak = 0
        left = b""  # the rest of a frame half sent: the stream stays framed
        cancel = b""
        end = time.monotonic() + 20
        while time.monotonic() < end and len(cancel) < k.HEADER_LEN:
            if not left and sent < 64 << 20:
                left = chunk
            if left:
                try:
                    n = h.agent.send(left)
                    left = left[n:]
                    sent += n
                except BlockingIOError:
                    time.sleep(0.01)
            peak = max([peak, *(len(c.outbuf) for c in list(h.keeper.clients.values()))])
            with contextlib.suppress(BlockingIOError):
                cancel += h.agent.recv(k.HEADER_LEN - len(cancel))
        assert len(cancel) == k.HEADER_LEN, f"the stuck client was not dropped ({sent} bytes)"
        assert k.HEADER.unpack(cancel)[2:4] == (k.CANCEL, ids[b"slow"])
        while left:
            try:
                left = left[h.agent.send(left) :]
            except BlockingIOError:
                time.sleep(0.01)
        assert peak <= 256 * 1024 + 2 * (65536 + k.HEADER_LEN)
        assert sent < 64 << 20  # the keeper stopped reading: backpressure, not buffering
        h.agent.setblocking(True)
        h.agent.settimeout(5)
        # The agent stream is consumed again (what was in flight for the slow one dropped),
        # and the other client is served.
        h.agent.sendall(k.frame(EXIT, ids[b"fast"], b"ok"))
        assert read(fast) == (EXIT, 1, b"ok")
    finally:
        h.stop()


def test_an_agent_breaking_the_frame_format_ends_the_keeper(harness: Harness) -> None:
    a, _ = harness.greeted_pair()
    harness.agent.sendall(b"XX" + bytes(10))
    harness.thread.join(5)
    assert harness.result == ["the agent broke the frame format"]
    assert a.recv(1) == b""


def test_the_keeper_ends_with_the_vmm(harness: Harness) -> None:
    harness.client()
    harness.stop()
    assert harness.result == ["the VMM exited"]


def test_idle_exit_waits_for_the_session_lock(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "session.lock"
    lock.touch()
    ours = os.open(lock, os.O_RDWR)
    fcntl.flock(ours, fcntl.LOCK_EX)  # a caller on its way in
    h = Harness(tmp_path, idle_lock=os.open(lock, os.O_RDWR), linger=0.2)
    try:
        time.sleep(0.8)
        assert h.thread.is_alive()
        c = h.client()  # connects while the lock is held, then lets go
        fcntl.flock(ours, fcntl.LOCK_UN)
        read(h.agent)
        time.sleep(0.5)
        assert h.thread.is_alive()  # it has a client
        c.close()
        h.thread.join(5)
        assert h.result == ["idle"]
    finally:
        h.stop()


# -- real AgentClients through the keeper, to the real agent -----------------------------------


@pytest.fixture
def shared(agent: Any, tmp_path: Path) -> Iterator[Path]:
    """A keeper process (the real program) in front of the real agent; its socket path."""
    import subprocess
    import sys

    raw = agent.raw_socket()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "session.sock"
    listener.bind(str(path))
    listener.listen(16)
    holder = subprocess.Popen(["sleep", "600"])  # stands for the VMM
    pidfd = os.pidfd_open(holder.pid)
    dir_fd = os.open(tmp_path, os.O_PATH)
    fds = (raw.fileno(), listener.fileno(), pidfd, dir_fd)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", k.__file__, "pyro-test", *map(str, fds), "session.sock",
         "session.pid", str(tmp_path / "no-lock")],
        pass_fds=fds,
    )  # fmt: skip
    (tmp_path / "session.pid").write_text(f"{proc.pid}\n")
    os.close(pidfd)
    os.close(dir_fd)
    raw.close()
    listener.close()
    try:
        yield path
    finally:
        holder.kill()
        holder.wait()
        assert proc.wait(10) == 0  # it ended with its "VMM"
        assert not path.exists() and not (tmp_path / "session.pid").exists()


def connect(path: Path) -> AgentClient:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return AgentClient.connect(sock, hello_timeout=10)


def test_real_clients_run_commands_at_once_through_the_keeper(shared: Path) -> None:
    clients = [connect(shared) for _ in range(3)]
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        script = f"date +%s.%N; sleep 1; echo {i}; date +%s.%N"
        results[i] = clients[i].exec(["sh", "-c", script], timeout_s=30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    spans = []
    for i, result in results.items():
        start, word, end = result.stdout.decode().split()
        assert (result.exit_code, word) == (0, str(i))
        spans.append((float(start), float(end)))
    # All three ran at the same time: each started before any other ended.
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    for c in clients:
        c.close()


def test_a_client_closing_kills_only_its_own_command(shared: Path, tmp_path: Path) -> None:
    mark = tmp_path / "survived"
    doomed, other = connect(shared), connect(shared)
    errors: list[BaseException] = []

    def doomed_exec() -> None:
        try:
            doomed.exec(["sh", "-c", f"sleep 2; touch {mark}"])
        except BaseException as exc:  # the connection closes under it
            errors.append(exc)

    gone = threading.Thread(target=doomed_exec)
    gone.start()
    time.sleep(0.5)
    doomed.close()  # as a kill -9 of its process would
    gone.join(10)
    assert errors
    out = other.exec(["sh", "-c", "sleep 2.5; echo alive"], timeout_s=30)
    assert out.stdout == b"alive\n"
    assert not mark.exists()  # the closed client's command was cancelled
    other.close()


def test_callers_are_counted_while_connected(shared: Path) -> None:
    from pyro.tasks.session import keeper_clients

    def count_becomes(n: int) -> bool:
        end = time.monotonic() + 10
        while keeper_clients(shared.parent, "test") != n and time.monotonic() < end:
            time.sleep(0.02)
        return keeper_clients(shared.parent, "test") == n

    assert count_becomes(0)
    a, b = connect(shared), connect(shared)
    assert count_becomes(2)
    a.close()
    assert count_becomes(1)
    b.close()
    assert count_becomes(0)  # the keeper lives on (no lock to end on), idle: not busy


# -- the keeper program against a hostile agent ------------------------------------------------


def _silent(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def _dribbling(sock: socket.socket) -> None:
    sock.recv(65536)  # the HELLO
    with contextlib.suppress(OSError):
        for byte in k.frame(k.HELLO_OK, 0, hello_ok()) * 100:
            sock.sendall(bytes([byte]))
            time.sleep(0.1)


def _oversized(sock: socket.socket) -> None:
    sock.recv(65536)
    sock.sendall(k.HEADER.pack(k.MAGIC, k.VERSION, k.HELLO_OK, 0, k.MAX_PAYLOAD + 1))
    _silent(sock)


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("agent_script", "error"),
    [
        (_silent, "did not answer the hello within 0.5 s"),
        (_dribbling, "did not answer the hello within 0.5 s"),
        (_oversized, "connection failed during hello"),
    ],
    ids=["never-answers", "one-byte-at-a-time", "bogus-frame-length"],
)
def test_a_hostile_agent_behind_the_keeper_fails_the_hello_and_the_keeper_leaves(
    tmp_path: Path, agent_script: Any, error: str
) -> None:
    """The real keeper program between a real AgentClient and an agent that never answers
    the hello, answers a byte at a time, or declares an oversized frame: the caller gets a
    clear error by its deadline, and the keeper exits (idle, or at the broken frame) leaving
    no socket or pid file behind."""
    import subprocess
    import sys

    from pyro.errors import PyroError

    keeper_end, agent = socket.socketpair()
    talker = threading.Thread(target=agent_script, args=(agent,), daemon=True)
    talker.start()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "session.sock"
    listener.bind(str(path))
    listener.listen(16)
    (tmp_path / "session.lock").touch()
    holder = subprocess.Popen(["sleep", "600"])  # stands for the VMM
    pidfd = os.pidfd_open(holder.pid)
    dir_fd = os.open(tmp_path, os.O_PATH)
    fds = (keeper_end.fileno(), listener.fileno(), pidfd, dir_fd)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", k.__file__, "pyro-test", *map(str, fds), "session.sock",
         "session.pid", str(tmp_path / "session.lock")],
        pass_fds=fds,
    )  # fmt: skip
    (tmp_path / "session.pid").write_text(f"{proc.pid}\n")
    for fd in (pidfd, dir_fd):
        os.close(fd)
    keeper_end.close()
    listener.close()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        begun = time.monotonic()
        with pytest.raises(PyroError, match=error):
            AgentClient.connect(sock, hello_timeout=0.5)
        assert time.monotonic() - begun < 2.0
        assert proc.wait(10) == 0  # gone on its own: idle, or the agent broke the format
        assert not path.exists() and not (tmp_path / "session.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        holder.kill()
        holder.wait()
        agent.close()


def test_shells_and_services_through_the_keeper(shared: Path) -> None:
    """Persistent processes through the keeper: one client's shell is driven by another
    while a third waits in a long-poll READ (ended by its OK) and a fourth runs an exec."""
    opener, typist, reader, runner = (connect(shared) for _ in range(4))
    opener.spawn("sh.dev", ["sh"], pty=True)
    opener.spawn("svc.web", ["sh", "-c", "echo up; exec sleep 600"])
    opener.close()  # persistent processes do not belong to the client that made them
    got: dict[str, Any] = {}

    def wait_for_output() -> None:
        out, cursor = b"", 0
        while b"typed-42" not in out:
            read = reader.proc_read("sh.dev", cursor, wait_s=20)
            out, cursor = out + read.data, read.cursor
        got["out"] = out

    thread = threading.Thread(target=wait_for_output)
    thread.start()
    time.sleep(0.3)  # the READ is waiting in the agent
    assert runner.exec(["echo", "meanwhile"], timeout_s=30).stdout == b"meanwhile\n"
    typist.proc_write("sh.dev", b"echo typed-$((6*7))\n")
    thread.join(30)
    assert b"typed-42" in got["out"]
    names = {p.name for p in runner.proc_list()}
    assert names == {"sh.dev", "svc.web"}
    assert runner.proc_read("svc.web", 0).data == b"up\n"
    for client in (typist, reader, runner):
        client.close()


def test_a_vanished_clients_waiting_read_is_cancelled(shared: Path) -> None:
    """kill -9 of a CLI in the middle of `task shell`'s long poll: the keeper's CANCEL ends
    the agent's waiting READ at once (its slot is free), the shell goes on."""
    owner = connect(shared)
    owner.spawn("sh.x", ["sh"], pty=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(shared))
    sock.sendall(
        k.frame(k.HELLO, 0, protocol.hello_payload(time_ns=1, seed=b"s" * 8, hostname=None))
    )
    assert read(sock)[0] == k.HELLO_OK
    time.sleep(0.3)  # the shell's prompt is out
    end = owner.proc_read("sh.x", 0, wait_s=0).state.end
    payload = encode_tlv([(Tag.NAME, "sh.x"), (Tag.CURSOR, end), (Tag.WAIT_MS, 60_000)])
    # 64 waiting READs fill the agent's waiter table; vanishing must free every one.
    for rid in range(1, 65):
        sock.sendall(k.frame(int(FrameType.READ), rid, payload))
    time.sleep(0.5)
    sock.close()
    time.sleep(0.5)
    started = time.monotonic()
    assert owner.proc_read("sh.x", 0, wait_s=0).state.running
    others = [connect(shared) for _ in range(3)]
    for other in others:  # each needs a waiter slot: a read past the end, with a wait
        assert other.proc_read("sh.x", end, wait_s=0.1).state.running
    assert time.monotonic() - started < 5
    for client in (owner, *others):
        client.close()
