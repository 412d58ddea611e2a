"""A command's stdin, streamed to the agent while the command runs.

The bytes (or a binary file, read in chunks: never whole) go out from a thread of their own
as STDIN frames, so output keeps being collected meanwhile. An agent from 0.2.0 on
acknowledges what the command has taken (OK with SIZE on the EXEC's id; ERRNO=EPIPE once
the command closed its input): the host keeps at most :data:`WINDOW` unacknowledged bytes
in flight, so the guest holds a bounded buffer whatever the size of the input, and a
command that never reads its stdin cannot make either side buffer it. An older agent
(a task created before) gets the stream without a window, as it always did.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import BinaryIO

from pyro.errors import GuestError, PyroError
from pyro.guest.mux import Mux
from pyro.guest.protocol import CHUNK_LEN, Fields, Frame, FrameType, Tag

#: What a command's stdin may be on the host: its bytes, or a binary file read to its end.
StdinSource = bytes | bytearray | memoryview | BinaryIO
#: Unacknowledged stdin bytes kept in flight (the most the agent buffers per command).
WINDOW = 16 * CHUNK_LEN  # 4 MiB: a smaller one slows the stream under TCG (round trips)
#: The first agent version that acknowledges STDIN frames.
ACKS_FROM = (0, 2)
#: How long ``stop`` waits for the feeding thread (it may sit in a read of a slow pipe).
JOIN_S = 1.0


class StdinReadError(PyroError):
    """The host could not read the stdin it was to give the command."""

    default_hint = "check the file or pipe given as stdin"


def acknowledges(agent_version: str) -> bool:
    """True when an agent of ``agent_version`` acknowledges stdin (see module doc)."""
    try:
        parts = tuple(int(p) for p in agent_version.split(".")[:2])
    except ValueError:
        return False
    return parts >= ACKS_FROM


class StdinFeeder:
    """Sends one command's stdin from a daemon thread; :meth:`ack` is fed the OK frames."""

    def __init__(self, mux: Mux, request_id: int, source: StdinSource, *, windowed: bool) -> None:
        self._mux = mux
        self._id = request_id
        self._source = source
        self._windowed = windowed
        self._cond = threading.Condition()
        self._sent = 0
        self._acked = 0
        self._stopped = False
        self.error: PyroError | None = None
        self._thread = threading.Thread(target=self._run, name="pyro-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def ack(self, frame: Frame) -> None:
        """An OK frame of the command: more room in the window, or (EPIPE) no more stdin."""
        fields = Fields(frame.payload)
        with self._cond:
            if fields.int(Tag.ERRNO, 0):
                self._stopped = True
            self._acked = max(self._acked, fields.int(Tag.SIZE, 0) or 0)
            self._cond.notify_all()

    def stop(self) -> None:
        """No more stdin (the command ended, or the exec failed); wait briefly for the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(JOIN_S)

    def _room(self) -> bool:
        """Wait until a chunk may be sent; False once stopped."""
        with self._cond:
            while not self._stopped and self._windowed and self._sent - self._acked >= WINDOW:
                self._cond.wait()
            return not self._stopped

    def _chunks(self) -> Iterator[bytes]:
        source = self._source
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source).cast("B")
            for start in range(0, len(view), CHUNK_LEN):
                yield bytes(view[start : start + CHUNK_LEN])
            return
        read = getattr(source, "read1", None) or source.read
        while True:
            try:
                chunk = read(CHUNK_LEN)
            except (OSError, ValueError) as exc:
                raise StdinReadError(f"cannot read the command's stdin: {exc}") from exc
            if not chunk:
                return
            if not isinstance(chunk, (bytes, bytearray)):
                raise StdinReadError(
                    f"the command's stdin gave {type(chunk).__name__}, not bytes",
                    "open the file in binary mode ('rb'), or pass bytes or str",
                )
            yield bytes(chunk)

    def _run(self) -> None:
        try:
            for chunk in self._chunks():
                if not self._room():
                    return
                self._mux.send(FrameType.STDIN, self._id, chunk)
                with self._cond:
                    self._sent += len(chunk)
            with self._cond:
                if self._stopped:
                    return
            self._mux.send(FrameType.STDIN, self._id, b"")  # end of input
        except StdinReadError as exc:
            # A half-read input must not look whole: stop the command instead.
            self.error = exc
            with contextlib.suppress(GuestError):
                self._mux.send(FrameType.CANCEL, self._id)
        except GuestError:
            pass  # the connection broke: the exec itself reports it
