"""Framing and the client's distrust of the guest, against a scripted fake guest."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro.errors import GuestError, GuestPathError, LimitError, RunTimeoutError
from pyro.guest.client import AgentClient
from pyro.guest.mux import read_frame
from pyro.guest.protocol import (
    GUEST_TYPES,
    HEADER,
    HEADER_LEN,
    HELLO_MAGIC,
    MAX_PAYLOAD,
    Fields,
    FrameType,
    ProtocolError,
    Tag,
    decode_header,
    encode_frame,
    encode_tlv,
    iter_tlv,
)

Script = Callable[[socket.socket], None]

HELLO_OK = encode_frame(
    FrameType.HELLO_OK,
    0,
    encode_tlv([(Tag.VERSION, 1), (Tag.AGENT_VERSION, "fake"), (Tag.KERNEL, "k")]),
)


def hold(sock: socket.socket) -> None:
    """Keep the connection open (reading and ignoring) until the host closes it."""
    while sock.recv(65536):
        pass


def read_host_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    header = b""
    while len(header) < HEADER_LEN:
        chunk = sock.recv(HEADER_LEN - len(header))
        if not chunk:
            raise EOFError
        header += chunk
    _, _, ftype, rid, length = HEADER.unpack(header)
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    return ftype, rid, payload


class FakeGuest:
    """Answers the hello, then runs a script against the host's socket in a thread."""

    def __init__(self, script: Script, *, answer_hello: bool = True) -> None:
        self.host, self.guest = socket.socketpair()
        self.answer_hello = answer_hello
        self.script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            ftype, _, payload = read_host_frame(self.guest)
            assert ftype == FrameType.HELLO
            assert Fields(payload).raw(Tag.MAGIC) == HELLO_MAGIC
            if self.answer_hello:
                self.guest.sendall(HELLO_OK)
            self.script(self.guest)
        except OSError:
            pass  # the host closed its end

    def close(self) -> None:
        self.guest.close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeGuest]]:
    made: list[FakeGuest] = []

    def make(script: Script, **kwargs: bool) -> FakeGuest:
        made.append(FakeGuest(script, **kwargs))
        return made[-1]

    yield make
    for guest in made:
        guest.close()
        guest.host.close()


def connect(guest: FakeGuest, **kwargs: float) -> AgentClient:
    return AgentClient.connect(guest.host, hello_timeout=5, **kwargs)


def reply_after_request(frames: Callable[[int], bytes], then: Script | None = None) -> Script:
    """A script that waits for one request, sends frames(request_id), then runs `then`."""

    def script(sock: socket.socket) -> None:
        _, rid, _ = read_host_frame(sock)
        sock.sendall(frames(rid))
        if then:
            then(sock)
        else:
            hold(sock)

    return script


def test_frame_round_trip() -> None:
    frame = encode_frame(FrameType.STDOUT, 7, b"abc")
    assert decode_header(frame[:HEADER_LEN]) == (FrameType.STDOUT, 7, 3)


@given(st.lists(st.tuples(st.sampled_from(list(Tag)), st.binary(max_size=64)), max_size=20))
def test_tlv_round_trip(items: list[tuple[Tag, bytes]]) -> None:
    assert list(iter_tlv(encode_tlv(items))) == [(int(t), v) for t, v in items]


@given(st.binary(max_size=64))
def test_tlv_decoder_never_overreads(garbage: bytes) -> None:
    try:
        for _, value in iter_tlv(garbage):
            assert len(value) <= len(garbage)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"XY\x01\x82" + struct.pack("<II", 1, 0), "bad frame header"),
        (b"PY\x02\x82" + struct.pack("<II", 1, 0), "bad frame header"),
        (b"PY\x01\x99" + struct.pack("<II", 1, 0), "unknown frame type"),
        (b"PY\x01\x02" + struct.pack("<II", 1, 0), "unknown frame type"),  # a host type
        (b"PY\x01\x82" + struct.pack("<II", 1, MAX_PAYLOAD + 1), "limit"),
    ],
)
def test_bad_headers_are_refused(header: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_header(header)


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff" * 64,  # garbage
        b"PY\x01\x82" + struct.pack("<II", 1, 1 << 30),  # claims a 1 GiB frame
        b"PY\x01\x77" + struct.pack("<II", 1, 0),  # unknown type
    ],
)
def test_bad_guest_bytes_fail_the_request_cleanly(
    fake: Callable[..., FakeGuest], bad: bytes
) -> None:
    client = connect(fake(reply_after_request(lambda rid: bad)))
    with pytest.raises(ProtocolError):
        client.exec(["true"])
    with pytest.raises(GuestError):  # the connection stays failed
        client.stat("/")
    client.close()


def test_truncated_frame_then_eof(fake: Callable[..., FakeGuest]) -> None:
    def frames(rid: int) -> bytes:
        return encode_frame(FrameType.STDOUT, rid, b"0123456789")[:-4]

    client = connect(fake(reply_after_request(frames, then=lambda sock: sock.close())))
    with pytest.raises(GuestError, match="mid-frame"):
        client.exec(["true"])
    client.close()


def test_slow_frames_are_reassembled(fake: Callable[..., FakeGuest]) -> None:
    def script(sock: socket.socket) -> None:
        _, rid, _ = read_host_frame(sock)
        data = encode_frame(FrameType.STDOUT, rid, b"slow") + encode_frame(
            FrameType.EXIT, rid, encode_tlv([(Tag.EXIT_CODE, 3)])
        )
        for i in range(len(data)):
            sock.sendall(data[i : i + 1])
            time.sleep(0.005)
        hold(sock)

    client = connect(fake(script))
    result = client.exec(["x"])
    assert (result.stdout, result.exit_code) == (b"slow", 3)
    client.close()


def test_guest_output_beyond_caps_is_dropped(fake: Callable[..., FakeGuest]) -> None:
    def script(sock: socket.socket) -> None:
        _, rid, _ = read_host_frame(sock)
        chunk = encode_frame(FrameType.STDOUT, rid, b"x" * MAX_PAYLOAD)
        for _ in range(40):  # 40 MiB, while the host asked for 1000 bytes
            sock.sendall(chunk)
        sock.sendall(encode_frame(FrameType.EXIT, rid, encode_tlv([(Tag.EXIT_CODE, 0)])))
        hold(sock)

    client = connect(fake(script))
    tracemalloc.start()
    try:
        result = client.exec(["x"], stdout_cap=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.stdout) == 1000
    assert result.stdout_truncated  # the guest did not say so; the host noticed
    assert peak < 8 << 20
    client.close()


def test_frames_for_unknown_requests_are_dropped(fake: Callable[..., FakeGuest]) -> None:
    def frames(rid: int) -> bytes:
        return encode_frame(FrameType.STDOUT, rid + 1000, b"stray") + encode_frame(
            FrameType.EXIT, rid, encode_tlv([(Tag.EXIT_CODE, 0)])
        )

    client = connect(fake(reply_after_request(frames)))
    assert client.exec(["x"]).stdout == b""
    client.close()


def test_unexpected_frame_for_a_request(fake: Callable[..., FakeGuest]) -> None:
    client = connect(fake(reply_after_request(lambda rid: encode_frame(FrameType.EXIT, rid))))
    with pytest.raises(ProtocolError, match="unexpected EXIT"):
        client.stat("/")
    client.close()


def test_hello_timeout(fake: Callable[..., FakeGuest]) -> None:
    guest = fake(hold, answer_hello=False)
    with pytest.raises(RunTimeoutError, match="hello"):
        AgentClient.connect(guest.host, hello_timeout=0.3)


def dribble(data: bytes, every_s: float) -> Script:
    """A script sending ``data`` one byte at a time, forever (until the host hangs up)."""

    def script(sock: socket.socket) -> None:
        while True:
            for byte in data:
                sock.sendall(bytes([byte]))
                time.sleep(every_s)

    return script


def flood(data: bytes) -> Script:
    """A script sending ``data`` again and again as fast as the host reads it."""

    def script(sock: socket.socket) -> None:
        while True:
            sock.sendall(data)

    return script


@pytest.mark.hostile
@pytest.mark.parametrize(
    "script",
    [
        dribble(HELLO_OK, 0.05),  # a hello answer at a byte every 50 ms: 2 s
        dribble(encode_frame(FrameType.STDOUT, 0, b"x" * 4000), 0.01),  # one long frame
        flood(encode_frame(FrameType.STDOUT, 0, b"x" * 100)),  # frames, never HELLO_OK
    ],
    ids=["slow-hello-ok", "slow-long-frame", "flood-before-hello-ok"],
)
def test_the_hello_deadline_holds_against_a_stalling_agent(
    fake: Callable[..., FakeGuest], script: Script
) -> None:
    """Bytes arriving just often enough, or frames that are never the answer: the hello
    still ends at its deadline with a clear error (it waited forever before)."""
    guest = fake(script, answer_hello=False)
    outcome: list[BaseException | AgentClient] = []

    def hello() -> None:
        try:
            outcome.append(AgentClient.connect(guest.host, hello_timeout=0.5))
        except BaseException as exc:  # the outcome is asserted below
            outcome.append(exc)

    begun = time.monotonic()
    thread = threading.Thread(target=hello, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the hello never ended"
    assert time.monotonic() - begun < 2.0
    assert isinstance(outcome[0], RunTimeoutError), outcome
    assert "did not answer the hello within 0.5 s" in str(outcome[0])


def test_request_timeout(fake: Callable[..., FakeGuest]) -> None:
    client = connect(fake(hold), request_timeout=0.3)
    with pytest.raises(RunTimeoutError):
        client.stat("/")
    client.close()


def test_guest_hangup_fails_waiting_calls(fake: Callable[..., FakeGuest]) -> None:
    def script(sock: socket.socket) -> None:
        read_host_frame(sock)
        sock.close()

    client = connect(fake(script))
    with pytest.raises(GuestError, match="lost the connection"):
        client.exec(["sleep", "1"])
    client.close()


def test_close_does_not_hang_mid_frame(fake: Callable[..., FakeGuest]) -> None:
    def frames(rid: int) -> bytes:
        return encode_frame(FrameType.STDOUT, rid, b"x" * 100)[:50]  # then silence

    client = connect(fake(reply_after_request(frames)))
    result: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(lambda: client.exec(["x"]), result))
    thread.start()
    time.sleep(0.2)
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(result[0], GuestError)


def test_wrong_protocol_version_is_refused() -> None:
    host, guest = socket.socketpair()
    try:
        guest.sendall(encode_frame(FrameType.HELLO_OK, 0, encode_tlv([(Tag.VERSION, 99)])))
        with pytest.raises(GuestError, match="protocol v99"):
            AgentClient.connect(host, hello_timeout=5)
    finally:
        guest.close()
        host.close()


def test_read_frame_reads_exactly_one_frame() -> None:
    host, guest = socket.socketpair()
    try:
        guest.sendall(encode_frame(FrameType.OK, 1, b"a") + encode_frame(FrameType.OK, 2))
        assert read_frame(host).payload == b"a"
        assert read_frame(host).request_id == 2
    finally:
        guest.close()
        host.close()


def _capture(fn: Callable[[], object], into: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        into.append(exc)


def test_shutdown_accepts_a_guest_that_vanishes(fake: Callable[..., FakeGuest]) -> None:
    def script(sock: socket.socket) -> None:
        ftype, _, _ = read_host_frame(sock)
        assert ftype == FrameType.SHUTDOWN
        sock.close()  # powered off before acknowledging

    connect(fake(script)).shutdown(timeout_s=5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_read_frame_on_arbitrary_bytes_decodes_or_refuses(data: bytes) -> None:
    host, guest = socket.socketpair()
    try:
        guest.sendall(data)
        guest.close()  # so a short stream ends instead of waiting
        host.settimeout(5)
        try:
            frame = read_frame(host)
        except (ProtocolError, EOFError):
            return
        assert frame.type in GUEST_TYPES
        assert len(frame.payload) <= len(data) - HEADER_LEN
    finally:
        host.close()


@pytest.mark.hostile
def test_file_names_decode_without_loss() -> None:
    # With errors="replace" both became "p3\ufffd": one host name for two guest files.
    from pyro.guest.protocol import Frame, shown_name
    from pyro.guest.results import GuestStat, to_stat

    def entry(name: bytes) -> GuestStat:
        payload = encode_tlv([(Tag.NAME, name), (Tag.KIND, b"l"), (Tag.LINK, name)])
        return to_stat(Frame(FrameType.ENTRY, 1, payload))

    bad, good = entry(b"p3\x80"), entry(b"p3\xef\xbf\xbd")
    assert bad.name != good.name and bad.link_target != good.link_target
    assert bad.name.encode("utf-8", "surrogateescape") == b"p3\x80"
    assert shown_name(bad.name) == good.name == "p3\N{REPLACEMENT CHARACTER}"
    assert Fields(encode_tlv([(Tag.MESSAGE, b"p3\x80")])).str(Tag.MESSAGE) == good.name


@pytest.mark.hostile
def test_an_oversized_request_is_a_clear_error_never_sent(fake: Callable[..., FakeGuest]) -> None:
    # A lying agent lists a chain of folders ~4,100 deep with 255-byte names: the old
    # client put the 1 MiB path in one frame and encode_frame raised a bare ValueError (a
    # crash). A path no guest can open is refused before it is sent; an oversized frame
    # is a LimitError, whoever builds it.
    received: list[bytes] = []

    def script(sock: socket.socket) -> None:
        while True:
            try:
                _, rid, payload = read_host_frame(sock)
            except EOFError:
                return  # the host closed
            received.append(Fields(payload).raw(Tag.PATH) or b"")
            sock.sendall(
                encode_frame(FrameType.ERROR, rid, encode_tlv([(Tag.ERRNO, 2), (Tag.MESSAGE, "x")]))
            )

    client = connect(fake(script))
    calls: list[Callable[[str], object]] = [
        client.stat,
        client.list_dir,
        lambda p: client.get_file(p, io.BytesIO()),
        lambda p: client.put_file(p, io.BytesIO(b"x")),
    ]
    for path in ["/" + "a" * 4095, "/" + "n" * 254 + "/n" * 2_000_000]:
        for call in calls:
            with pytest.raises(GuestPathError, match="a guest path is at most 4095 bytes"):
                call(path)
    with pytest.raises(GuestPathError):
        client.stat("/" + "a" * 4094)  # the longest path: sent, and answered
    assert received == [b"/" + b"a" * 4094]
    client.close()

    with pytest.raises(LimitError, match="larger than the agent protocol allows"):
        encode_frame(FrameType.EXEC, 1, b"x" * (MAX_PAYLOAD + 1))
