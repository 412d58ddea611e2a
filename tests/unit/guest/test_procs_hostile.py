"""The host checks every persistent-process reply of a lying guest agent (a scripted agent on a
socketpair): cursors going backwards, bytes skipped silently, oversized reads, bad listings."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from pyro.errors import UsageError
from pyro.guest.client import AgentClient
from pyro.guest.procs import PROC_MAX
from pyro.guest.protocol import (
    HEADER,
    HEADER_LEN,
    PROTOCOL_VERSION,
    Fields,
    FrameType,
    ProtocolError,
    Tag,
    TlvValue,
    encode_frame,
    encode_tlv,
)

Script = Callable[[FrameType, int], list[bytes]]


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


@pytest.fixture
def lying() -> Iterator[Callable[[Script], AgentClient]]:
    clients: list[AgentClient] = []

    def make(script: Script) -> AgentClient:
        host, guest = socket.socketpair()

        def serve() -> None:
            try:
                while True:
                    _, _, ftype, request_id, length = HEADER.unpack(_recv(guest, HEADER_LEN))
                    _recv(guest, length)
                    if ftype == FrameType.HELLO:
                        ok = encode_tlv([(Tag.VERSION, PROTOCOL_VERSION)])
                        guest.sendall(encode_frame(FrameType.HELLO_OK, 0, ok))
                        continue
                    for reply in script(FrameType(ftype), request_id):
                        guest.sendall(reply)
            except (EOFError, OSError):
                guest.close()

        threading.Thread(target=serve, daemon=True).start()
        client = AgentClient.connect(host, hello_timeout=5, request_timeout=5)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def read_reply(data: bytes, cursor: int, first: int, end: int, pid: int = 7) -> Script:
    fields: list[tuple[Tag, TlvValue]] = [
        (Tag.DATA, data),
        (Tag.CURSOR, cursor),
        (Tag.FIRST, first),
        (Tag.PID, pid),
        (Tag.RUNNING, 1),
        (Tag.END, end),
    ]
    return lambda ftype, rid: [encode_frame(FrameType.OK, rid, encode_tlv(fields))]


def test_an_honest_reply_passes_and_reports_what_was_missed(
    lying: Callable[[Script], AgentClient],
) -> None:
    got = lying(read_reply(b"abc", cursor=103, first=0, end=103)).proc_read("s", 100)
    assert (got.data, got.cursor, got.missed) == (b"abc", 103, 0)
    lost = lying(read_reply(b"xyz", cursor=53, first=50, end=53)).proc_read("s", 10)
    assert (lost.data, lost.cursor, lost.missed) == (b"xyz", 53, 40)


@pytest.mark.parametrize(
    ("asked", "max_bytes", "reply"),
    [
        (100, 512, read_reply(b"abc", cursor=53, first=0, end=200)),  # backwards
        (100, 512, read_reply(b"abc", cursor=153, first=0, end=200)),  # skips, not lost
        (100, 2, read_reply(b"abc", cursor=103, first=0, end=200)),  # more than asked
        (100, 512, read_reply(b"abc", cursor=103, first=0, end=101)),  # past the end
        (100, 512, read_reply(b"abc", cursor=103, first=0, end=103, pid=0)),  # no pid
        (10, 512, read_reply(b"abc", cursor=53, first=60, end=53)),  # before its own first
    ],
)
def test_a_lying_read_is_a_protocol_error(
    lying: Callable[[Script], AgentClient], asked: int, max_bytes: int, reply: Script
) -> None:
    with pytest.raises(ProtocolError):
        lying(reply).proc_read("s", asked, max_bytes=max_bytes)


def _entries(names: list[str]) -> Script:
    def script(ftype: FrameType, rid: int) -> list[bytes]:
        frames = [
            encode_frame(
                FrameType.ENTRY,
                rid,
                encode_tlv([(Tag.NAME, n), (Tag.PID, 9), (Tag.END, 0), (Tag.RUNNING, 1)]),
            )
            for n in names
        ]
        return [*frames, encode_frame(FrameType.OK, rid)]

    return script


@pytest.mark.parametrize(
    "names",
    [
        [f"p{i}" for i in range(PROC_MAX + 1)],  # more than the agent can hold
        ["../etc"],
        ["same", "same"],
    ],
)
def test_a_lying_listing_is_a_protocol_error(
    lying: Callable[[Script], AgentClient], names: list[str]
) -> None:
    with pytest.raises(ProtocolError):
        lying(_entries(names)).proc_list()


def test_an_honest_listing_passes(lying: Callable[[Script], AgentClient]) -> None:
    assert [p.name for p in lying(_entries(["b", "a"])).proc_list()] == ["a", "b"]


def test_a_spawn_without_a_pid_is_a_protocol_error(
    lying: Callable[[Script], AgentClient],
) -> None:
    client = lying(lambda ftype, rid: [encode_frame(FrameType.OK, rid)])
    with pytest.raises(ProtocolError):
        client.spawn("svc", ["true"])


@pytest.mark.parametrize("cursor", [2**63, 2**64 + 5, 10**30])
def test_a_cursor_no_agent_can_hold_is_a_usage_error_and_nothing_is_sent(
    lying: Callable[[Script], AgentClient], cursor: int
) -> None:
    # An MCP caller's cursor is only ``ge=0``: past int64 it broke the frame encoder (a
    # bug, and a crash log on the host for every call).
    sent: list[FrameType] = []

    def script(ftype: FrameType, rid: int) -> list[bytes]:
        sent.append(ftype)
        return [encode_frame(FrameType.ERROR, rid)]

    with pytest.raises(UsageError, match="cursor"):
        lying(script).proc_read("s", cursor)
    assert sent == []


def test_an_integer_a_frame_cannot_carry_is_a_usage_error() -> None:
    for value in (2**63, -(2**63) - 1):
        with pytest.raises(UsageError, match="out of range"):
            encode_tlv([(Tag.CURSOR, value)])
    for edge in (2**63 - 1, -(2**63)):  # the edges still go through
        assert Fields(encode_tlv([(Tag.CURSOR, edge)])).int(Tag.CURSOR) == edge
