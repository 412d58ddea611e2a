"""Demultiplexing guest frames onto requests: one reader thread, one queue per request.

Memory stays bounded whatever the guest sends: frames are size-checked before they are read,
exec output beyond the caller's caps is trimmed on arrival, and the reader stops reading
(backpressure on the socket) while more than ``MAX_BUFFERED`` bytes wait for their callers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pyro.errors import GuestError, RunTimeoutError
from pyro.guest.protocol import (
    HEADER_LEN,
    Frame,
    FrameType,
    ProtocolError,
    decode_header,
    encode_frame,
)

MAX_BUFFERED = 16 << 20
_FRAME_OVERHEAD = 64  # what a queued frame costs beyond its payload, for the budget


@dataclass
class Request:
    """What one in-flight request has received and may still receive."""

    request_id: int
    frames: deque[Frame] = field(default_factory=deque)
    caps: dict[FrameType, int] = field(default_factory=dict)
    received: dict[FrameType, int] = field(default_factory=dict)
    trimmed: set[FrameType] = field(default_factory=set)


def recv_exact(
    sock: socket.socket,
    n: int,
    stop: Callable[[], bool] | None = None,
    deadline: float | None = None,
) -> bytes:
    """Exactly n bytes (n is at most one frame, so this is bounded).

    A socket timeout before the first byte propagates (the caller is idle); once a frame has
    started, timeouts are waited out until ``stop()`` says to give up. With a monotonic
    ``deadline``, no byte is waited for past it, however slowly they come.

    Raises:
        EOFError: if the stream ends first (mid-frame or between frames), or stop() is true.
        TimeoutError: if the socket times out before the first byte, or the deadline passes.
    """
    parts: list[bytes] = []
    left = n
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the deadline passed")
            sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(left, 1 << 20))
        except TimeoutError:
            if deadline is not None or (not parts and stop is None):
                raise
            if stop is not None and stop():
                raise EOFError("the connection was closed") from None
            continue
        if not chunk:
            raise EOFError("guest agent closed the connection" + (" mid-frame" if parts else ""))
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(
    sock: socket.socket, stop: Callable[[], bool] | None = None, deadline: float | None = None
) -> Frame:
    """One guest frame from the socket (whole by the monotonic ``deadline`` if given).

    Raises:
        ProtocolError: if the header is invalid (see decode_header).
        EOFError: if the stream ends.
        TimeoutError: if the socket times out before the frame starts, or the deadline
            passes.
    """
    first = recv_exact(sock, 1, deadline=deadline)  # idle timeouts surface here
    header = first + recv_exact(sock, HEADER_LEN - 1, stop, deadline)
    ftype, request_id, length = decode_header(header)
    return Frame(ftype, request_id, recv_exact(sock, length, stop, deadline) if length else b"")


class Mux:
    """Owns the socket after the hello: sends frames, routes received frames to requests."""

    def __init__(self, sock: socket.socket, io_timeout: float = 60.0) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._requests: dict[int, Request] = {}
        self._buffered = 0
        self._next_id = 0
        self._error: GuestError | None = None
        self._closed = False
        # The timeout bounds how long a guest that stopped reading can stall one frame's send
        # (the reader just keeps waiting through it); close() wakes the reader by shutdown().
        sock.settimeout(io_timeout)
        self._reader = threading.Thread(target=self._read_loop, name="pyro-agent-reader")
        self._reader.daemon = True
        self._reader.start()

    # -- requests ---------------------------------------------------------------------------

    def open(self, caps: dict[FrameType, int] | None = None) -> Request:
        with self._cond:
            self._raise_if_broken()
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            while self._next_id in self._requests:
                self._next_id = self._next_id % 0xFFFFFFFF + 1
            req = Request(self._next_id, caps=dict(caps or {}))
            self._requests[req.request_id] = req
            return req

    def finish(self, req: Request) -> None:
        """Forget a request; frames that still arrive for it are dropped."""
        with self._cond:
            if self._requests.pop(req.request_id, None) is not None:
                for frame in req.frames:
                    self._buffered -= len(frame.payload) + _FRAME_OVERHEAD
                req.frames.clear()
                self._cond.notify_all()

    def next(self, req: Request, deadline: float | None, what: str) -> Frame:
        """The next frame for req, waiting until the monotonic deadline.

        Raises:
            RunTimeoutError: if nothing arrives in time.
            GuestError: if the connection broke or the guest broke the protocol.
        """
        with self._cond:
            while not req.frames:
                self._raise_if_broken()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RunTimeoutError(
                        f"guest agent did not answer {what} in time",
                        "the guest may be overloaded or hung; 'pyro vm logs ID' shows its console",
                    )
                self._cond.wait(remaining)
            frame = req.frames.popleft()
            self._buffered -= len(frame.payload) + _FRAME_OVERHEAD
            self._cond.notify_all()
            return frame

    def send(self, ftype: FrameType, request_id: int, payload: bytes = b"") -> None:
        """Write one frame (whole frames never interleave between threads).

        Raises:
            GuestError: if the connection is broken.
        """
        data = encode_frame(ftype, request_id, payload)
        with self._send_lock:
            with self._cond:
                self._raise_if_broken()
            try:
                self._sock.sendall(data)
            except OSError as exc:
                self._fail(GuestError(f"cannot send to the guest agent: {exc}"))
                raise GuestError(f"cannot send to the guest agent: {exc}") from exc

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._error is None:
                self._error = GuestError("the connection to the guest agent was closed")
            self._cond.notify_all()
        # Let a frame being sent finish first: a half-sent frame would make the agent read the
        # next host's HELLO as its rest (see docs/agent-protocol.md, "Host reconnects").
        sending = self._send_lock.acquire(timeout=2)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if sending:
            self._send_lock.release()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)
        self._sock.close()

    @property
    def broken(self) -> GuestError | None:
        with self._cond:
            return self._error

    def _is_closed(self) -> bool:
        with self._cond:
            return self._closed

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: GuestError) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def _read_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
            try:
                frame = read_frame(self._sock, self._is_closed)
            except TimeoutError:
                continue  # idle between frames: look at _closed again
            except ProtocolError as exc:
                self._fail(exc)
                return
            except (EOFError, OSError) as exc:
                self._fail(GuestError(f"lost the connection to the guest agent: {exc}"))
                return
            self._route(frame)

    def _route(self, frame: Frame) -> None:
        with self._cond:
            req = self._requests.get(frame.request_id)
            if req is None:
                return  # a request we already gave up on; the guest may still be finishing it
            payload = frame.payload
            cap = req.caps.get(frame.type)
            if cap is not None:
                got = req.received.get(frame.type, 0)
                if got + len(payload) > cap:
                    payload = payload[: max(0, cap - got)]
                    req.trimmed.add(frame.type)
                req.received[frame.type] = got + len(payload)
                if not payload:
                    return
                frame = Frame(frame.type, frame.request_id, payload)
            cost = len(payload) + _FRAME_OVERHEAD
            while self._buffered + cost > MAX_BUFFERED and not self._closed:
                if frame.request_id not in self._requests:
                    return
                self._cond.wait(0.5)
            req.frames.append(frame)
            self._buffered += cost
            self._cond.notify_all()
