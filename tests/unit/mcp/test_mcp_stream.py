"""Streaming a command's output stays bounded: coalesced, capped, the drops said.
(On a real guest through the stdio client: tests/e2e/test_mcp_stream_stdio.py.)"""

from __future__ import annotations

import threading
import time

from pyro.mcp.stream import OutputStream, Stream


class Sink:
    """Records what would go to the client, and when."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sent: list[tuple[Stream, str, float]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, stream: Stream, text: str) -> None:
        time.sleep(self.delay)
        self.threads.add(threading.current_thread().name)
        self.sent.append((stream, text, time.monotonic()))

    def text(self, stream: Stream) -> str:
        return "".join(t for s, t, _ in self.sent if s == stream and not t.startswith("[pyro]"))

    def notes(self) -> list[str]:
        return [t for _, t, _ in self.sent if t.startswith("[pyro]")]


def test_a_flood_is_coalesced_capped_and_the_drop_is_said() -> None:
    sink = Sink()
    out = OutputStream(sink, every_s=0.05, pending_max=4096, cap_bytes=20_000)
    chunk = b"y" * 1000 + b"\n"
    begun = time.monotonic()
    fed = 0
    while time.monotonic() - begun < 0.5:  # a command printing as fast as it can
        out.stdout(chunk)
        fed += len(chunk)
    out.close()
    streamed = sink.text("stdout")
    assert fed > 1_000_000  # the flood was real
    assert len(streamed) <= 20_000  # the call's cap
    # Coalesced: a handful of messages, never one per chunk; at most one per interval.
    messages = [t for s, t, _ in sink.sent if s == "stdout" and not t.startswith("[pyro]")]
    assert len(messages) <= 0.5 / 0.05 + 2
    assert all(len(text) <= 4096 for text in messages)  # the pending bound per message
    (note,) = sink.notes()
    assert note == (
        f"[pyro] {fed - len(streamed)} bytes of stdout were not streamed (more than the "
        "stream's rate or size cap); the tool result holds the output"
    )


def test_quiet_output_arrives_without_waiting_for_more() -> None:
    sink = Sink()
    out = OutputStream(sink, every_s=0.2)
    out.stdout(b"first\n")
    time.sleep(0.1)
    assert sink.text("stdout") == "first\n"  # sent at once: the stream was quiet
    out.stdout(b"second\n")
    out.stderr(b"err\n")
    time.sleep(0.4)  # no more output: the timer sends what waits
    assert sink.text("stdout") == "first\nsecond\n" and sink.text("stderr") == "err\n"
    out.close()
    assert sink.notes() == []
    times = [at for s, _, at in sink.sent if s == "stdout"]
    assert times[1] - times[0] >= 0.19  # one message per interval


def test_a_slow_client_never_holds_the_command() -> None:
    sink = Sink(delay=0.3)
    out = OutputStream(sink, every_s=0.01)
    begun = time.monotonic()
    for _ in range(50):
        out.stdout(b"x" * 100)
    assert time.monotonic() - begun < 0.2  # feeding never waited for a send
    out.close()
    assert sink.text("stdout") == "x" * 5000


def test_utf8_split_across_chunks_is_kept_whole() -> None:
    sink = Sink()
    out = OutputStream(sink, every_s=0.0)
    data = "héllo wörld ✓\n".encode()
    for i in range(len(data)):
        out.stdout(data[i : i + 1])
        time.sleep(0.002)
    out.close()
    assert sink.text("stdout") == "héllo wörld ✓\n"


def test_nothing_is_sent_after_close() -> None:
    sink = Sink()
    out = OutputStream(sink)
    out.stdout(b"a")
    out.close()
    out.stdout(b"late")
    time.sleep(0.3)
    assert sink.text("stdout") == "a"


def test_a_failing_send_does_not_fail_the_command() -> None:
    def broken(stream: Stream, text: str) -> None:
        raise BrokenPipeError("client gone")

    out = OutputStream(broken, every_s=0.0)
    out.stdout(b"a\n")
    time.sleep(0.05)
    out.close()  # no exception
