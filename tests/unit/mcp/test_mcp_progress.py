"""A worker's progress message never blocks it for good, whatever the event loop does."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any

import pytest

from pyro.mcp import progress
from pyro.mcp.progress import LogLevel, Reporter


class _Ctx:
    """Just what a Reporter reads from an MCP request context."""

    class request_context:
        meta: dict[str, Any] | None = None

    def __init__(self) -> None:
        self.sent: list[tuple[float, float | None, str | None]] = []

    async def report_progress(self, value: float, total: float | None, text: str | None) -> None:
        self.sent.append((value, total, text))


def _reporter_on(loop: asyncio.AbstractEventLoop, ctx: _Ctx) -> Reporter:
    async def make() -> Reporter:
        return Reporter(ctx, LogLevel("emergency"))  # type: ignore[arg-type]

    return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=5)


def test_progress_reaches_a_running_loop() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        ctx = _Ctx()
        _reporter_on(loop, ctx).step(1, 3, "boot")
        assert ctx.sent == [(1, 3, "boot")]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=5)
        loop.close()


def test_a_loop_that_stops_taking_messages_does_not_hold_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session ended while a cancelled call's worker was still cleaning up: the loop is
    # alive but never runs again. The worker used to wait on it forever, so the process
    # never exited.
    monkeypatch.setattr(progress, "_SEND_WAIT_S", 0.3)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    ctx = _Ctx()
    reporter = _reporter_on(loop, ctx)
    stuck = threading.Event()
    loop.call_soon_threadsafe(stuck.wait)  # the loop's thread blocks: it takes nothing more
    try:
        begun = time.monotonic()
        worker = threading.Thread(target=reporter.step, args=(2, 3, "exec"), daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive() and time.monotonic() - begun < 5
        assert ctx.sent == []
    finally:
        stuck.set()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.close()
            gc.collect()
    # The message it gave up on was closed, not left to the loop never awaited.
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_no_loop_no_message() -> None:
    ctx = _Ctx()
    Reporter(ctx, LogLevel("emergency")).step(1, 1, "exec")  # type: ignore[arg-type]
    assert ctx.sent == []
