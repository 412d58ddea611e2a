"""Telling the client how a long call goes: progress notifications and log messages.

A call's work runs in a worker thread (:mod:`pyro.mcp.calls`); a :class:`Reporter` hands
what it sees to the event loop. A call that carries a ``progressToken`` gets
``notifications/progress`` for each step of a run, and for the bytes of a pull and the
lines of a build (also inside a run's pull or build step); the SDK sends nothing for a
call without one. Progress also keeps a client's timeout from ending a long pull.

Log messages (``notifications/message``) go out at or above the level the client chose
with ``logging/setLevel`` (:class:`LogLevel`, one per server: ``pyro mcp serve`` serves
one session over stdio; ``info`` until it chooses), or for this request in its ``_meta``
(the 2026-07-28 revision's way, where the SDK also filters).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, get_args

import anyio
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import LOG_LEVEL_META_KEY, EmptyResult, LoggingLevel, SetLevelRequestParams

if TYPE_CHECKING:
    from pyro.environments.status import ProgressEvent
    from pyro.execute.apply import EventSink

#: Severity order of the MCP (RFC 5424) levels, lowest first.
LEVELS: tuple[LoggingLevel, ...] = get_args(LoggingLevel)
#: Byte progress of a pull is told at most this often (seconds).
_BYTES_EVERY_S = 0.25
#: How long a worker waits for the event loop to take one message. A loop that stopped
#: (the session ended while a cancelled call's worker still cleans up) never will, and a
#: worker blocked for good would keep the process from exiting.
_SEND_WAIT_S = 5.0
#: The most of an output line a progress message carries (the log message has it all).
_LINE_MAX = 200


class LogLevel:
    """The lowest level the client wants log messages at (``logging/setLevel``)."""

    def __init__(self, level: LoggingLevel = "info") -> None:
        self.level: LoggingLevel = level

    def allows(self, level: LoggingLevel) -> bool:
        return LEVELS.index(level) >= LEVELS.index(self.level)

    async def set_level(self, ctx: object, params: SetLevelRequestParams) -> EmptyResult:
        """The ``logging/setLevel`` request handler."""
        self.level = params.level
        return EmptyResult()


class Reporter:
    """Progress and log messages of one tool call, callable from its worker thread.

    Sending is best-effort: a client that went away must not fail the run.
    """

    def __init__(self, ctx: Context | None, level: LogLevel) -> None:
        self._ctx = ctx
        # Made on the event loop's thread (the tool handler); sends come from the worker.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        # A 2026-07-28 client asks per request (in _meta) instead of with logging/setLevel.
        meta = ctx.request_context.meta if ctx is not None else None
        asked = (meta or {}).get(LOG_LEVEL_META_KEY)
        self._level = LogLevel(asked) if asked in LEVELS else level
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}
        self._last_bytes_at = 0.0
        self._told = 0  # events told since the current step began (or since the call began)
        self._step: tuple[int, int] | None = None  # (number, total) of the current plan step

    def step(self, number: int, total: int, step_id: str) -> None:
        """A plan step begins (an SDK ``on_step`` sink): progress ``number`` of ``total``."""
        with self._lock:
            self._step, self._told = (number, total), 0
        self._progress(number, total, step_id)
        self.log("info", f"step {number}/{total}: {step_id}")

    def events(self, then: EventSink) -> EventSink:
        """An SDK ``on_event`` sink: ``then`` (the call's cancellation), and for each of
        a run's phases a debug log message."""

        def sink(group: str, phase: str, fields: Mapping[str, str]) -> None:
            then(group, phase, fields)
            details = " ".join(f"{key}={value}" for key, value in fields.items())
            self.log("debug", f"[{group}] phase={phase} {details}".rstrip())

        return sink

    def pull(self, event: ProgressEvent) -> None:
        """A pull or build event (an SDK ``progress``/``on_pull`` sink).

        The spec wants each progress value above the last. Alone (``env_pull``) the value
        is the bytes downloaded so far, all blobs added up, plus one per event; inside a
        run's step N it moves from N towards N + 1 without reaching it, so the next step
        still comes out above.
        """
        if event.phase == "download":
            now = time.monotonic()
            with self._lock:
                self._bytes[event.message] = event.done
                if now - self._last_bytes_at < _BYTES_EVERY_S and event.done < event.total:
                    return
                self._last_bytes_at = now
            text = (
                f"download {event.environment} {event.message}: {event.done} of {event.total} bytes"
            )
        else:
            text = f"{event.phase} {event.environment}" + (
                f": {event.message}" if event.message else ""
            )
            level: LoggingLevel = "debug" if event.phase == "build" else "info"
            self.log("warning" if event.phase == "warning" else level, text)
        self._progress(*self._advance(), text)

    def output(self, stream: str, text: str) -> None:
        """A command's output while it runs (:mod:`pyro.mcp.stream` bounds it): the text as
        an ``info`` log message from logger ``pyro.stdout``/``pyro.stderr``, and its last
        line as progress (for a call with a progressToken)."""
        self.log("info", text, logger=f"pyro.{stream}")
        lines = text.rstrip("\n").rsplit("\n", 1)
        last = lines[-1][:_LINE_MAX]
        self._progress(*self._advance(), f"{stream}: {last}")

    def _advance(self) -> tuple[float, float | None]:
        """The next progress value, and the total: see :meth:`pull`."""
        with self._lock:
            self._told += 1
            if self._step is None:
                return sum(self._bytes.values()) + self._told, None
            number, total = self._step
            return number + self._told / (self._told + 1), total

    def log(self, level: LoggingLevel, text: str, *, logger: str = "pyro") -> None:
        """A ``notifications/message`` at ``level``, if the client wants that level."""
        if self._ctx is not None and self._level.allows(level):
            self._send(self._log, level, text, logger)

    def _progress(self, value: float, total: float | None, text: str) -> None:
        if self._ctx is not None:
            self._send(self._ctx.report_progress, value, total, text)

    async def _log(self, level: LoggingLevel, text: str, logger: str) -> None:
        assert self._ctx is not None
        session = self._ctx.request_context.session
        # Deprecated by the 2026-07-28 revision (which gates it per request itself), still
        # the way to log to the handshake-era clients that send logging/setLevel.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await session.send_log_message(
                level, text, logger=logger, related_request_id=self._ctx.request_id
            )

    def _send(self, send: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        # Not from a worker of a running loop, or the client is gone: nothing to tell.
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        coro = send(*args)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed in between
            coro.close()
            return
        try:
            future.result(timeout=_SEND_WAIT_S)
        except (
            concurrent.futures.TimeoutError,
            concurrent.futures.CancelledError,
            RuntimeError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ):
            if future.cancel():  # still pending: the loop never started it, and never will
                coro.close()
