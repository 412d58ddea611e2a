"""A running command's output, streamed to the MCP client while it runs, within bounds.

The SDK hands output to callbacks as it arrives (``on_stdout``/``on_stderr``); an
:class:`OutputStream` is those callbacks for one tool call. A command that floods its
output must neither flood the client nor grow the server's memory, so output is

* coalesced: sent at most once per :data:`EVERY_S` per stream (a timer sends what waits
  when the command goes quiet), as one message;
* held back at most :data:`PENDING_MAX` bytes per stream between two sends, and sent at
  most :data:`CAP_BYTES` per call; what does not fit is dropped and counted;
* closed with one message saying how many bytes of which stream were not streamed.

Streaming only tells: the tool's result holds the output as before (up to its own cap).
How a message travels (log and progress notifications) is :meth:`Reporter.output
<pyro.mcp.progress.Reporter.output>`.
"""

from __future__ import annotations

import codecs
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pyro.mcp.progress import Reporter

Stream = Literal["stdout", "stderr"]
#: Seconds between two messages of one stream.
EVERY_S = 0.25
#: Bytes one stream may hold between two messages; more is dropped (and counted).
PENDING_MAX = 16 * 1024
#: Bytes one call streams at most (both streams); more is dropped (and counted).
CAP_BYTES = 256 * 1024


class OutputStream:
    """Bounded, coalesced streaming of one call's output to ``send(stream, text)``.

    ``feed`` is called from the SDK's threads and never waits for the client; ``send``
    runs in a timer's thread (or :meth:`close`'s), one message at a time, in order. Call
    :meth:`close` when the command ended: it sends what waits and the note on what was
    dropped, before the result goes out.
    """

    def __init__(
        self,
        send: Callable[[Stream, str], None],
        *,
        every_s: float = EVERY_S,
        pending_max: int = PENDING_MAX,
        cap_bytes: int = CAP_BYTES,
    ) -> None:
        self._send = send
        self._every = every_s
        self._pending_max = pending_max
        self._left = cap_bytes
        self._lock = threading.Lock()  # the buffers and counters
        self._sending = threading.Lock()  # one message at a time, in order
        self._pending: dict[Stream, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._dropped: dict[Stream, int] = {"stdout": 0, "stderr": 0}
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in self._pending
        }
        self._last: dict[Stream, float] = {"stdout": 0.0, "stderr": 0.0}
        self._timers: dict[Stream, threading.Timer | None] = {"stdout": None, "stderr": None}
        self._closed = False

    def stdout(self, data: bytes) -> None:
        """An ``on_stdout`` callback."""
        self.feed("stdout", data)

    def stderr(self, data: bytes) -> None:
        """An ``on_stderr`` callback."""
        self.feed("stderr", data)

    def feed(self, stream: Stream, data: bytes) -> None:
        """Take a chunk; it is sent as soon as the stream's last message is old enough."""
        with self._lock:
            if self._closed:
                return
            pending = self._pending[stream]
            waiting = sum(len(held) for held in self._pending.values())
            room = max(0, min(self._pending_max - len(pending), self._left - waiting))
            pending += data[:room]
            self._dropped[stream] += len(data) - min(room, len(data))
            # Sent from a timer thread: the SDK's reader never waits for the client.
            if self._timers[stream] is None and pending:
                wait = max(0.0, self._last[stream] + self._every - time.monotonic())
                timer = threading.Timer(wait, self._flush, (stream,))
                timer.daemon = True
                self._timers[stream] = timer
                timer.start()

    def close(self) -> None:
        """Send what waits, then one line per stream that lost bytes; no more afterwards."""
        with self._lock:
            self._closed = True
            timers = [timer for timer in self._timers.values() if timer is not None]
        for timer in timers:
            timer.cancel()
        for stream in ("stdout", "stderr"):
            self._flush(stream, final=True)
        for stream, dropped in self._dropped.items():
            if dropped:
                self._deliver(
                    stream,
                    f"[pyro] {dropped} bytes of {stream} were not streamed (more than the "
                    "stream's rate or size cap); the tool result holds the output",
                )

    def _flush(self, stream: Stream, *, final: bool = False) -> None:
        with self._sending:
            with self._lock:
                self._timers[stream] = None
                data = bytes(self._pending[stream])
                self._pending[stream].clear()
                self._left -= len(data)
                self._last[stream] = time.monotonic()
            text = self._decoders[stream].decode(data, final=final)
            if text:
                self._deliver(stream, text)

    def _deliver(self, stream: Stream, text: str) -> None:
        # A client that went away must not fail the command (nor a timer thread).
        with contextlib.suppress(Exception):
            self._send(stream, text)


@contextlib.contextmanager
def streaming(report: Reporter) -> Iterator[OutputStream]:
    """An :class:`OutputStream` to ``report``, closed (its rest sent) when the block ends:
    in the worker thread, so every message goes out before the tool's result."""
    out = OutputStream(report.output)
    try:
        yield out
    finally:
        out.close()
