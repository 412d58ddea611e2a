"""Tool calls run in worker threads: two in flight both finish, a cancelled one deletes its VM."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp import Client

from pyro.errors import NotFoundError
from pyro.mcp.calls import in_thread
from pyro.mcp.server import build_server
from pyro.sdk.cancel import CallCancelledError, Cancellation
from tests.unit.mcp.mcp_fakes import GUARD_S, FakePyro

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_two_calls_in_flight_both_complete() -> None:
    fake = FakePyro()
    # Each call waits inside its worker until the other one is running too: if a call
    # blocked the event loop, the second could not start and the barrier would break.
    barrier = threading.Barrier(2, timeout=GUARD_S)
    fake.run_hook = lambda vm_id, on_event: barrier.wait() and None
    results: dict[str, Any] = {}
    async with Client(build_server("vm-run", sdk=fake)) as client:  # type: ignore[arg-type]

        async def call(command: str) -> None:
            arguments = {"environment": "debian:12", "command": command}
            results[command] = await client.call_tool("vm_run", arguments)

        async with anyio.create_task_group() as group:
            group.start_soon(call, "first")
            group.start_soon(call, "second")
    assert not barrier.broken
    assert {k: v.is_error for k, v in results.items()} == {"first": False, "second": False}
    assert results["second"].structured_content["steps"][0]["stdout"] == "ran second"


async def test_cancelled_call_deletes_the_vm_it_created() -> None:
    fake = FakePyro()
    running = threading.Event()

    def hook(vm_id: str, on_event: Callable[..., None]) -> None:
        running.set()
        # The "command" runs until its VM is deleted, like a real guest killed under it.
        assert fake.released.wait(GUARD_S)

    fake.run_hook = hook
    server = build_server("vm-run", sdk=fake)  # type: ignore[arg-type]
    async with Client(server) as client, anyio.create_task_group() as group:
        arguments = {"environment": "debian:12", "command": "sleep 600"}
        group.start_soon(client.call_tool, "vm_run", arguments)
        assert await anyio.to_thread.run_sync(running.wait, GUARD_S)
        group.cancel_scope.cancel()
    assert fake.deleted[:1] == ["vm-1"]


async def test_vm_created_after_the_cancel_is_deleted_too() -> None:
    fake = FakePyro()
    creating, finish = threading.Event(), threading.Event()

    def hook() -> None:
        creating.set()
        assert finish.wait(GUARD_S)

    fake.create_hook = hook
    server = build_server("full", sdk=fake)  # type: ignore[arg-type]
    async with Client(server) as client, anyio.create_task_group() as group:
        group.start_soon(client.call_tool, "vm_create", {"environment": "debian:12"})
        assert await anyio.to_thread.run_sync(creating.wait, GUARD_S)
        group.cancel_scope.cancel()
    assert fake.deleted == []
    finish.set()  # create_vm returns only now, after the call was cancelled
    assert await anyio.to_thread.run_sync(fake.released.wait, GUARD_S)
    assert fake.deleted == ["vm-1"]
    assert fake.vms == {}


def test_cancellation_deletes_tracked_and_later_vms() -> None:
    deleted: list[str] = []
    token = Cancellation(deleted.append)
    token.track("a")
    token.track("a")
    token.cancel()
    with pytest.raises(CallCancelledError):
        token.track("b")
    assert deleted == ["a", "b"]


def test_cancelled_run_stops_at_its_next_phase_but_not_in_cleanup() -> None:
    token = Cancellation(lambda vm_id: None)
    token.on_event("run", "execute", {"vm_id": "a"})
    token.cancel()
    token.on_event("run", "cleanup", {"vm_id": "a"})
    with pytest.raises(CallCancelledError, match="cancelled"):
        token.on_event("run", "execute", {"vm_id": "a"})


def test_deleting_a_vm_that_is_already_gone_is_quiet() -> None:
    def delete(vm_id: str) -> bool:
        raise NotFoundError(f"no VM with id '{vm_id}'")

    token = Cancellation(delete)
    token.track("gone")
    token.cancel()
    assert token.cancelled


async def test_in_thread_returns_the_result_and_raises_errors() -> None:
    deleted: list[str] = []
    assert await in_thread(lambda token: 42, undo=deleted.append) == 42

    def fail(token: Cancellation) -> None:
        raise NotFoundError("no VM with id 'x'")

    with pytest.raises(NotFoundError):
        await in_thread(fail, undo=deleted.append)
    assert deleted == []
