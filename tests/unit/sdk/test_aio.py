""":class:`AsyncPyro` has every :class:`Pyro` method, with the same parameters, as a
coroutine; :class:`Cancellation` undoes what a cancelled call reported. (Cancelling a run
on a real guest: tests/e2e/test_sdk.py.)"""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyro import AsyncPyro, NotFoundError, Pyro
from pyro.sdk.cancel import CallCancelledError, Cancellation


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.isfunction(value)
    }


def test_async_pyro_has_every_pyro_method_with_the_same_parameters() -> None:
    sync_methods = _public_methods(Pyro) - {"confined", "close"}
    assert sync_methods <= set(dir(AsyncPyro))
    apyro = AsyncPyro()
    for name in sorted(sync_methods):
        method = getattr(apyro, name)
        if name == "apply_many":  # results as they finish: an async iterator
            assert inspect.isasyncgenfunction(method), name
        else:
            assert inspect.iscoroutinefunction(method), name
        want = inspect.signature(getattr(Pyro, name)).parameters
        got = inspect.signature(method).parameters
        assert list(got) == [p for p in want if p != "self"], name
        assert method.__doc__ == getattr(Pyro, name).__doc__, name
    assert inspect.iscoroutinefunction(apyro.close)
    assert isinstance(apyro.confined(None), AsyncPyro)


def test_an_async_call_returns_the_sync_result_and_raises_its_errors(tmp_path: Path) -> None:
    apyro = AsyncPyro(state_dir=tmp_path)

    async def main() -> None:
        assert await apyro.list_vms() == []
        with pytest.raises(NotFoundError):
            await apyro.status_vm("no-such-vm")
        assert await apyro.delete_vm("no-such-vm") is False

    asyncio.run(main())


def test_a_cancelled_call_waits_for_its_worker_and_undoes_what_it_reported() -> None:
    undone: list[str] = []
    started, release = threading.Event(), threading.Event()

    class Slow(Pyro):
        def delete_vm(self, vm_id: str) -> bool:
            undone.append(vm_id)
            release.set()  # deleting the VM is what ends a running command
            return True

        def exec_vm(self, vm_id: str, command: object, **kwargs: object) -> object:  # type: ignore[override]
            started.set()
            release.wait(30)
            raise CallCancelledError("the VM went away")

    apyro = AsyncPyro(sync=Slow())

    async def main() -> None:
        call = asyncio.create_task(apyro.exec_vm("vm-1", "sleep 30"))
        await asyncio.to_thread(started.wait, 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(asyncio.wait_for(main(), 60))
    assert undone == ["vm-1"]


def test_a_vm_a_cancelled_call_was_making_is_deleted_once_it_exists() -> None:
    deleted: list[str] = []
    making, proceed = threading.Event(), threading.Event()

    class Maker(Pyro):
        def create_vm(self, environment: str, **kwargs: object) -> object:  # type: ignore[override]
            making.set()
            proceed.wait(30)  # a pull or a build in progress, uninterruptible
            return SimpleNamespace(id="vm-9")

        def delete_vm(self, vm_id: str) -> bool:
            deleted.append(vm_id)
            return True

    apyro = AsyncPyro(sync=Maker())

    async def main() -> None:
        call = asyncio.create_task(apyro.create_vm("debian:12"))
        await asyncio.to_thread(making.wait, 30)
        call.cancel()
        asyncio.get_running_loop().call_later(0.2, proceed.set)
        with pytest.raises(asyncio.CancelledError):
            await call
        assert deleted == ["vm-9"]  # before the await ended

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_tracked_vm_after_the_cancel_is_undone_on_the_spot() -> None:
    undone: list[str] = []
    token = Cancellation(undone.append)
    token.track("a")
    token.cancel()
    assert undone == ["a"]
    with pytest.raises(CallCancelledError):
        token.track("b")
    assert undone == ["a", "b"]


def test_events_track_vms_and_stop_a_cancelled_run_but_never_its_cleanup() -> None:
    undone: list[str] = []
    token = Cancellation(undone.append)
    token.on_event("run", "start", {"vm_id": "v1"})
    token.cancel()
    assert undone == ["v1"]
    token.on_event("run", "cleanup", {"vm_id": "v1"})  # cleanup goes on
    with pytest.raises(CallCancelledError):
        token.on_event("run", "execute", {"vm_id": "v1"})


def test_cancelling_closes_the_task_sessions_the_call_opened_and_only_those() -> None:
    from pyro.errors import StateError
    from pyro.tasks.session import current

    class Session:
        closed = False

        def close(self) -> None:
            self.closed = True

    token, other = Cancellation(), Cancellation()
    mine, theirs, done = Session(), Session(), Session()
    with token.scope():
        scope = current()
        assert scope is token.sessions
        scope.add(mine)  # type: ignore[arg-type]
        scope.add(done)  # type: ignore[arg-type]
        scope.discard(done)  # type: ignore[arg-type]  # a session the call closed itself
    with other.scope():
        other.sessions.add(theirs)  # type: ignore[arg-type]
    assert current() is None
    token.cancel()
    assert (mine.closed, done.closed, theirs.closed) == (True, False, False)
    late = Session()
    with pytest.raises(StateError, match="cancelled"):
        token.sessions.add(late)  # type: ignore[arg-type]
    assert late.closed
