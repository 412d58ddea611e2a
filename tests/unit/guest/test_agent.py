"""The real C agent (host test mode) driven through AgentClient."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from pyro.errors import GuestError, GuestPathError, LimitError
from pyro.guest.client import AgentClient, GuestRequestError
from pyro.guest.protocol import Fields, FrameType, Tag, encode_frame, encode_tlv

if TYPE_CHECKING:
    from conftest import AgentServer


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll a condition; the bound only keeps a failing test from hanging."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(marker in part for part in proc.info.get("cmdline") or []):
            found.append(proc)
    return found


def test_hello_reports_versions(agent: AgentServer) -> None:
    client = agent.connect()
    assert client.info.protocol_version == 1
    assert client.info.agent_version
    assert client.info.kernel == os.uname().release


def test_exit_codes(agent: AgentServer) -> None:
    client = agent.connect()
    assert client.exec(["true"]).exit_code == 0
    assert client.exec(["false"]).exit_code == 1
    result = client.exec(["sh", "-c", "exit 42"])
    assert (result.exit_code, result.signal, result.timed_out) == (42, None, False)


def test_missing_program_is_exit_127(agent: AgentServer) -> None:
    result = agent.connect().exec(["/no/such/program"])
    assert result.exit_code == 127
    assert b"No such file or directory" in result.stderr


def test_signal_death_is_reported(agent: AgentServer) -> None:
    result = agent.connect().exec(["sh", "-c", "kill -TERM $$"])
    assert result.exit_code is None
    assert result.signal == signal.SIGTERM


def test_stdout_and_stderr_stay_apart(agent: AgentServer) -> None:
    script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    seen: list[bytes] = []
    result = agent.connect().exec(["sh", "-c", script], on_stdout=seen.append)
    assert result.stdout == b"out1\nout2\nout3\n"
    assert result.stderr == b"err1\nerr2\nerr3\n"
    assert b"".join(seen) == result.stdout


def test_env_and_cwd(agent: AgentServer, tmp_path: Path) -> None:
    result = agent.connect().exec(
        ["sh", "-c", 'echo "$GREETING"; pwd; echo "$HOME"'],
        env={"GREETING": "hi"},
        cwd=str(tmp_path),
    )
    assert result.stdout.decode().splitlines() == ["hi", str(tmp_path), "/root"]


def test_bad_cwd_is_reported(agent: AgentServer) -> None:
    result = agent.connect().exec(["true"], cwd="/no/such/dir")
    assert result.exit_code == 126
    assert b"/no/such/dir" in result.stderr


def test_stdin_is_fed_in_chunks(agent: AgentServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    result = agent.connect().exec(["sha256sum"], stdin=data)
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_no_stdin_reads_eof(agent: AgentServer) -> None:
    assert agent.connect().exec(["cat"]).stdout == b""


def test_huge_output_is_capped_with_bounded_memory(agent: AgentServer) -> None:
    client = agent.connect()
    tracemalloc.start()
    try:
        result = client.exec(
            ["sh", "-c", "head -c 50000000 /dev/zero; head -c 50000000 /dev/zero >&2"],
            stdout_cap=1 << 20,
            stderr_cap=1000,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert len(result.stdout) == 1 << 20 and result.stdout_truncated
    assert len(result.stderr) == 1000 and result.stderr_truncated
    assert peak < 16 << 20


def test_timeout_kills_the_whole_process_group(agent: AgentServer) -> None:
    result = agent.connect().exec(["sh", "-c", "sleep 987.65 & sleep 987.65"], timeout_s=0.5)
    assert result.timed_out
    assert result.signal == signal.SIGKILL
    assert wait_until(lambda: not processes_with("987.65"))


def test_background_child_does_not_hold_the_result(agent: AgentServer) -> None:
    # The main process exits while a background child keeps stdout open.
    result = agent.connect().exec(["sh", "-c", "sleep 3 & echo started"])
    assert result.exit_code == 0
    assert result.stdout == b"started\n"


def test_concurrent_execs_from_threads(agent: AgentServer) -> None:
    client = agent.connect()
    results: dict[int, bytes] = {}

    def run(n: int) -> None:
        results[n] = client.exec(["sh", "-c", f"sleep 0.2; echo {n}"]).stdout

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: f"{n}\n".encode() for n in range(6)}


def test_put_and_get_100_mb(agent: AgentServer, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        for _ in range(100):
            fh.write(os.urandom(1 << 20))
    client = agent.connect()
    guest = tmp_path / "guest" / "nested" / "big.bin"
    assert client.put_file(str(guest), src, mode=0o600) == 100 << 20
    assert guest.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "back.bin"
    with out.open("wb") as fh:
        assert client.get_file(str(guest), fh) == 100 << 20
    digest = hashlib.sha256
    assert digest(out.read_bytes()).digest() == digest(src.read_bytes()).digest()
    assert [p.name for p in guest.parent.iterdir()] == ["big.bin"]  # no temp file left


def test_put_is_binary_safe_and_handles_empty_files(agent: AgentServer, tmp_path: Path) -> None:
    client = agent.connect()
    data = bytes(range(256)) * 10
    assert client.put_file(str(tmp_path / "bin"), io.BytesIO(data)) == len(data)
    assert client.put_file(str(tmp_path / "empty"), io.BytesIO(b"")) == 0
    assert (tmp_path / "bin").read_bytes() == data
    assert (tmp_path / "empty").read_bytes() == b""


def test_exec_runs_during_a_big_transfer(agent: AgentServer, tmp_path: Path) -> None:
    client = agent.connect()
    data = os.urandom(1 << 20) * 40
    errors: list[BaseException] = []

    def transfer() -> None:
        try:
            client.put_file(str(tmp_path / "t.bin"), io.BytesIO(data))
            client.get_file(str(tmp_path / "t.bin"), io.BytesIO())
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=transfer)
    thread.start()
    outputs = [client.exec(["echo", str(n)]).stdout for n in range(5)]
    thread.join()
    assert not errors
    assert outputs == [f"{n}\n".encode() for n in range(5)]
    assert (tmp_path / "t.bin").stat().st_size == len(data)


def test_get_file_limit(agent: AgentServer, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1_000_000)
    client = agent.connect()
    with pytest.raises(LimitError):
        client.get_file(str(tmp_path / "f"), io.BytesIO(), max_bytes=1000)
    assert client.exec(["true"]).exit_code == 0  # the connection is still in sync


@pytest.mark.parametrize("path", ["relative/path", "/no/such/file", "/"])
def test_get_bad_paths(agent: AgentServer, path: str) -> None:
    with pytest.raises(GuestPathError):
        agent.connect().get_file(path, io.BytesIO())


def test_put_bad_paths(agent: AgentServer, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    client = agent.connect()
    with pytest.raises(GuestPathError):
        client.put_file("relative", io.BytesIO(b"x"))
    with pytest.raises(GuestPathError):
        client.put_file(str(tmp_path / "afile" / "below"), io.BytesIO(b"x"))
    with pytest.raises(GuestPathError):
        client.put_file(str(tmp_path), io.BytesIO(b"x"))
    with pytest.raises(GuestPathError):
        client.put_file("/x", tmp_path / "missing-on-host")


def test_stat_and_list(agent: AgentServer, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"12345")
    (tmp_path / "l").symlink_to("f")
    client = agent.connect()
    st = client.stat(str(tmp_path / "f"))
    assert (st.name, st.kind, st.type, st.size) == ("f", "f", "file", 5)
    entries = {e.name: e for e in client.list_dir(str(tmp_path))}
    assert {"d", "f", "l"} <= set(entries)
    assert entries["d"].type == "dir"
    assert (entries["l"].type, entries["l"].link_target) == ("symlink", "f")
    with pytest.raises(GuestPathError):
        client.stat(str(tmp_path / "missing"))
    with pytest.raises(GuestPathError):
        client.list_dir(str(tmp_path / "f"))


def test_signal_and_cancel_frames(agent: AgentServer) -> None:
    client = agent.connect()
    mux = client._mux
    cases = [
        (FrameType.SIGNAL, encode_tlv([(Tag.SIGNAL, signal.SIGINT)]), signal.SIGINT, "61.25"),
        (FrameType.CANCEL, b"", signal.SIGKILL, "61.5"),
    ]
    for ftype, payload, expected, marker in cases:
        req = mux.open()
        argv = encode_tlv([(Tag.ARG, "sleep"), (Tag.ARG, marker)])
        mux.send(FrameType.EXEC, req.request_id, argv)
        assert wait_until(lambda m=marker: bool(processes_with(m)))  # type: ignore[misc]
        mux.send(ftype, req.request_id, payload)
        frame = mux.next(req, time.monotonic() + 10, "exec")
        assert frame.type == FrameType.EXIT
        assert Fields(frame.payload).int(Tag.SIGNAL) == expected
        mux.finish(req)


def test_reconnect_kills_running_commands_and_serves_the_new_host(agent: AgentServer) -> None:
    first = agent.connect()
    started = threading.Event()

    def run() -> None:
        started.set()
        with contextlib.suppress(GuestError):  # the connection is closed under it
            first.exec(["sh", "-c", "sleep 876.54"])

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    assert wait_until(lambda: bool(processes_with("876.54")))
    first.close()
    thread.join()
    second = agent.connect()
    assert second.exec(["echo", "again"]).stdout == b"again\n"
    assert wait_until(lambda: not processes_with("876.54"))


def test_garbage_before_hello_is_skipped(agent: AgentServer) -> None:
    sock = agent.raw_socket()
    sock.sendall(b"\x00garbage PY\x01 more garbage" * 10)
    client = AgentClient.connect(sock, hello_timeout=10)
    agent.clients.append(client)
    assert client.exec(["true"]).exit_code == 0


def test_shutdown_ends_test_mode_agent(agent: AgentServer) -> None:
    agent.connect().shutdown()
    assert agent.proc.wait(timeout=10) == 0


def test_close_is_idempotent(agent: AgentServer) -> None:
    client = agent.connect()
    client.close()
    client.close()
    with pytest.raises(GuestError):
        client.exec(["true"])


def test_too_many_arguments_is_refused(agent: AgentServer) -> None:
    client = agent.connect()
    with pytest.raises(GuestRequestError, match="4096") as info:
        client.exec(["true", *["x"] * 5000])
    assert info.value.errno == errno.E2BIG
    assert client.exec(["true"]).exit_code == 0


def test_program_is_searched_in_the_given_path(agent: AgentServer) -> None:
    result = agent.connect().exec(["ls"], env={"PATH": "/nonexistent"})
    assert result.exit_code == 127


def test_serve_fd_mode_serves_one_stream_and_exits(agent_binary: Path) -> None:
    host, guest = socket.socketpair()
    proc = subprocess.Popen(
        [str(agent_binary), "--serve-fd", str(guest.fileno())], pass_fds=[guest.fileno()]
    )
    guest.close()
    try:
        with AgentClient.connect(host, hello_timeout=10) as client:
            assert client.exec(["echo", "fd"]).stdout == b"fd\n"
        assert proc.wait(timeout=10) == 0  # the end of its stream ends the agent
    finally:
        proc.kill()
        proc.wait()


def test_usage_error_without_a_mode(agent_binary: Path) -> None:
    proc = subprocess.run([str(agent_binary)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "--listen-unix" in proc.stderr


def test_agent_survives_malformed_frames_from_a_host(agent: AgentServer) -> None:
    rng = random.Random(1234)
    # Read-only and harmless types only: random EXEC/PUT/SHUTDOWN frames could act on the host.
    harmless = [t for t in range(256) if t not in (FrameType.EXEC, FrameType.PUT, 0x0C)]
    sock = agent.raw_socket()
    sock.sendall(encode_frame(FrameType.HELLO, 0, encode_tlv([(Tag.MAGIC, b"pyro-agent-hello")])))
    for _ in range(300):
        payload = rng.randbytes(rng.randrange(0, 2048))
        if rng.random() < 0.5:  # TLV-shaped, with lying lengths now and then
            tag, length = rng.randrange(0, 50), rng.choice([0, 4, 8, 1 << 31, len(payload)])
            payload = struct.pack("<HI", tag, length) + payload
        header = struct.pack(
            "<2sBBII", b"PY", 1, rng.choice(harmless), rng.randrange(1 << 32), len(payload)
        )
        sock.sendall(header + payload)
    sock.sendall(rng.randbytes(5000))  # and plain garbage
    sock.close()
    client = agent.connect()
    assert client.exec(["echo", "alive"]).stdout == b"alive\n"
    assert agent.proc.poll() is None


def test_path_search_skips_non_executables(agent: AgentServer, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        d.mkdir()
        (d / "hello").write_text(f"#!/bin/sh\necho from {d.name}\n")
    (second / "hello").chmod(0o755)  # first/hello is not executable: skipped like execvp does
    path = f"{first}:{second}:/usr/bin:/bin"
    assert agent.connect().exec(["hello"], env={"PATH": path}).stdout == b"from b\n"


def test_mount_is_refused_in_test_mode(agent: AgentServer, tmp_path: Path) -> None:
    """Test mode never touches the host's mounts: no folder made, nothing mounted.
    (Real mounts: tests/e2e/test_task_datadisk.py.)"""
    from pyro.guest.results import GuestRequestError

    client = agent.connect()
    target = tmp_path / "mnt"
    with pytest.raises(GuestRequestError) as caught:
        client.mount("tmpfs", str(target), "tmpfs", dirs=(str(tmp_path / "made"),))
    assert caught.value.errno == errno.EOPNOTSUPP and "test mode" in caught.value.summary
    assert not target.exists() and not (tmp_path / "made").exists()
    assert client.exec(["true"]).exit_code == 0  # the session goes on


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_exec_as_another_user(agent: AgentServer) -> None:
    """EXEC's UID/GID run the command as that user (what an image's User becomes)."""
    result = agent.connect().exec(
        ["sh", "-c", 'id -u; id -g; id -G; echo "$HOME"'], uid=65534, gid=65533, cwd="/"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["65534", "65533", "65533", "/"]


def test_exec_as_a_user_it_cannot_become_is_reported(agent_binary: Path, tmp_path: Path) -> None:
    from tests.unit.guest.conftest import AgentServer as Server

    # Root can become anyone: as root, the agent runs without CAP_SETUID/CAP_SETGID.
    prefix = (
        ["setpriv", "--bounding-set=-setuid,-setgid", "--inh-caps=-setuid,-setgid"]
        if os.geteuid() == 0
        else []
    )
    server = Server(agent_binary, tmp_path, prefix)
    try:
        result = server.connect().exec(["true"], uid=1, gid=1)
    finally:
        server.stop()
    assert result.exit_code == 126
    assert b"cannot run as 1:1" in result.stderr
