""":class:`AsyncPyro`: the :class:`~pyro.sdk.Pyro` methods for asyncio applications.

pyro's runtime is blocking (QEMU's monitor, the guest agent's socket, file copies), so each
call runs the synchronous method in a worker thread and the event loop stays free. What
asyncio adds is cancellation: a cancelled call undoes what it started before the
``CancelledError`` reaches the caller. A run's VMs are reported by its events as soon as
they exist and are deleted (which ends the command), a VM or task the call made is deleted,
a command in a task is cancelled by closing the call's task sessions (the task and other
callers' commands go on); then the call waits for its worker to end, so nothing
it started is left running. Environment pulls, builds and pushes start no VM: their worker
is left to finish in the background (an install is atomic) and the call ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from pyro.sdk import Pyro
from pyro.sdk.cancel import Cancellation

if TYPE_CHECKING:
    from pyro.execute.prepare import SpecSource
    from pyro.execute.result import RunResult
    from pyro.host.confine import Root

P = ParamSpec("P")
T = TypeVar("T")


class _Async(Generic[P, T]):
    """A :class:`Pyro` method as an :class:`AsyncPyro` coroutine method, with what
    cancelling it undoes: ``undo`` names the Pyro method applied to each VM (or task) the
    call reports: through its run events (``events``), as the argument ``track`` names
    (undone at once: that ends a running command), or as the ``id`` of the result
    (``owned``: undone when the worker has made or booted it). ``abandon``: a cancelled
    call does not wait for its worker."""

    def __init__(
        self,
        method: Callable[Concatenate[Pyro, P], T],
        *,
        undo: str | None = None,
        events: bool = False,
        track: str | None = None,
        owned: bool = False,
        abandon: bool = False,
    ) -> None:
        self.method = method
        self.undo, self.events, self.track, self.owned = undo, events, track, owned
        self.abandon = abandon
        self.name = method.__name__
        self.__doc__ = method.__doc__
        self._signature: inspect.Signature | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Async[P, T]: ...
    @overload
    def __get__(self, obj: AsyncPyro, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: AsyncPyro | None, owner: type) -> Any:
        if obj is None:
            return self

        @functools.wraps(self.method)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            sync = obj.sync
            # Every call gets one: cancelling it closes the task sessions it opened.
            token = Cancellation(getattr(sync, self.undo) if self.undo else None)
            return await _in_worker(lambda: self._work(sync, token, args, kwargs), token, self)

        if self._signature is None:  # the sync method's without ``self``
            signature = inspect.signature(self.method)
            parameters = list(signature.parameters.values())[1:]
            self._signature = signature.replace(parameters=parameters)
        call.__signature__ = self._signature  # type: ignore[attr-defined]
        return call

    def _work(
        self,
        sync: Pyro,
        token: Cancellation | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        if token is not None and self.events:
            kwargs = {**kwargs, "on_event": _both(token.on_event, kwargs.get("on_event"))}
        if token is not None and self.track is not None:
            token.track(kwargs[self.track] if self.track in kwargs else args[0])
        with token.scope() if token is not None else contextlib.nullcontext():
            result: T = getattr(sync, self.name)(*args, **kwargs)  # a subclass's, if overridden
        if token is not None and self.owned:
            token.track(result.id)  # type: ignore[attr-defined]
        return result


def _both(
    first: Callable[[str, str, Mapping[str, str]], None],
    second: Callable[[str, str, Mapping[str, str]], None] | None,
) -> Callable[[str, str, Mapping[str, str]], None]:
    if second is None:
        return first

    def sink(group: str, phase: str, fields: Mapping[str, str]) -> None:
        first(group, phase, fields)
        second(group, phase, fields)

    return sink


async def _in_worker(work: Callable[[], T], token: Cancellation | None, how: _Async[Any, T]) -> T:
    """``work()`` in a worker thread; when the awaiting task is cancelled, undo what the
    call started (shielded from further cancels), then let the ``CancelledError`` go on."""
    loop = asyncio.get_running_loop()
    worker = loop.run_in_executor(None, contextvars.copy_context().run, work)
    try:
        return await asyncio.shield(worker)
    except asyncio.CancelledError:
        worker.add_done_callback(_retrieve)  # most often CallCancelledError: expected
        teardown = asyncio.ensure_future(_undo(worker, token, abandon=how.abandon))
        while not teardown.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(teardown)
        teardown.result()
        raise


async def _undo(worker: asyncio.Future[Any], token: Cancellation | None, *, abandon: bool) -> None:
    if token is not None:
        await asyncio.to_thread(token.cancel)
    if not abandon:
        await asyncio.wait([worker])


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class AsyncPyro:
    """The :class:`~pyro.sdk.Pyro` API for asyncio: the same methods, arguments and results,
    as coroutines. Each call runs in a worker thread; callbacks (``on_event``,
    ``on_stdout``, ``progress``…) are called in that thread.

    Cancelling a call (``task.cancel()``, ``asyncio.timeout``…) undoes what it started
    before the ``CancelledError`` reaches the caller: ``run_in_vm``/``apply`` delete their
    VM, ``create_vm``/``create_task`` delete what they made, ``exec_vm`` deletes its VM (it
    would anyway), ``exec_task``/``start_task``/``reset_task`` stop the task (its disk and
    journal stay), ``start_vm`` stops the VM. Environment pulls, builds and pushes finish
    in the background.

    Raises (every method): :class:`pyro.errors.PyroError` subclasses only.
    """

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        warm_pool: int = 0,
        confine_to: Root | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        sync: Pyro | None = None,
    ) -> None:
        """Arguments as :class:`Pyro`'s; or ``sync``, an existing Pyro to drive (and its
        warm pool), e.g. one a synchronous part of the application also uses."""
        self._sync = sync or Pyro(state_dir=state_dir, warm_pool=warm_pool, confine_to=confine_to)

    @property
    def sync(self) -> Pyro:
        """The synchronous :class:`Pyro` this one drives."""
        return self._sync

    @property
    def root(self) -> Root | None:
        """The folders host paths are confined to (None: not confined)."""
        return self._sync.root

    def confined(
        self,
        root: Root | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    ) -> AsyncPyro:
        """This AsyncPyro with host paths confined to ``root``; see :meth:`Pyro.confined`."""
        return AsyncPyro(sync=self._sync.confined(root))

    async def close(self) -> None:
        """Delete the guests the warm pool holds; see :meth:`Pyro.close`."""
        await asyncio.to_thread(self._sync.close)

    async def __aenter__(self) -> AsyncPyro:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- specs, plans and runs ---------------------------------------------------------------
    load_spec = _Async(Pyro.load_spec)
    plan = _Async(Pyro.plan)
    apply = _Async(Pyro.apply, undo="delete_vm", events=True)
    run_in_vm = _Async(Pyro.run_in_vm, undo="delete_vm", events=True)
    plan_many = _Async(Pyro.plan_many)

    async def apply_many(
        self,
        spec_or_path: SpecSource,
        *,
        vars: Mapping[str, object] | None = None,
        run_name: str | None = None,
        prepull: bool = False,
    ) -> AsyncIterator[RunResult]:
        results = await asyncio.to_thread(
            self._sync.apply_many, spec_or_path, vars=vars, run_name=run_name, prepull=prepull
        )
        try:
            while (result := await asyncio.to_thread(next, results, None)) is not None:
                yield result
        finally:  # also when the caller stops early or is cancelled: what runs is cancelled
            await asyncio.shield(asyncio.to_thread(results.close))

    apply_many.__doc__ = Pyro.apply_many.__doc__

    # -- VMs ---------------------------------------------------------------------------------
    create_vm = _Async(Pyro.create_vm, undo="delete_vm", owned=True)
    start_vm = _Async(Pyro.start_vm, undo="stop_vm", owned=True)
    exec_vm = _Async(Pyro.exec_vm, undo="delete_vm", track="vm_id")
    stop_vm = _Async(Pyro.stop_vm)
    delete_vm = _Async(Pyro.delete_vm)
    status_vm = _Async(Pyro.status_vm)
    logs_vm = _Async(Pyro.logs_vm)
    list_vms = _Async(Pyro.list_vms)

    # -- tasks -------------------------------------------------------------------------------
    create_task = _Async(Pyro.create_task, undo="delete_task", owned=True)
    exec_task = _Async(Pyro.exec_task)  # cancelling closes its session: its command ends
    start_task = _Async(Pyro.start_task, undo="stop_task", owned=True)
    reset_task = _Async(Pyro.reset_task, undo="stop_task", owned=True)
    stop_task = _Async(Pyro.stop_task)
    delete_task = _Async(Pyro.delete_task)
    status_task = _Async(Pyro.status_task)
    logs_task = _Async(Pyro.logs_task)
    list_tasks = _Async(Pyro.list_tasks)
    update_task = _Async(Pyro.update_task)
    read_task_file = _Async(Pyro.read_task_file)
    copy_task_file = _Async(Pyro.copy_task_file)
    write_task_file = _Async(Pyro.write_task_file)
    list_task_files = _Async(Pyro.list_task_files)
    push_task_dir = _Async(Pyro.push_task_dir)
    export_task_path = _Async(Pyro.export_task_path)
    create_task_snapshot = _Async(Pyro.create_task_snapshot)
    list_task_snapshots = _Async(Pyro.list_task_snapshots)
    delete_task_snapshot = _Async(Pyro.delete_task_snapshot)
    pause_task = _Async(Pyro.pause_task)
    resume_task = _Async(Pyro.resume_task, undo="stop_task", owned=True)
    fork_task = _Async(Pyro.fork_task, undo="delete_task", owned=True)
    diff_task = _Async(Pyro.diff_task)
    patch_task = _Async(Pyro.patch_task)
    # shells and services (pyro.sdk.task_procs): they outlive the call, nothing to undo
    open_task_shell = _Async(Pyro.open_task_shell)
    write_task_shell = _Async(Pyro.write_task_shell)
    read_task_shell = _Async(Pyro.read_task_shell)
    resize_task_shell = _Async(Pyro.resize_task_shell)
    signal_task_shell = _Async(Pyro.signal_task_shell)
    close_task_shell = _Async(Pyro.close_task_shell)
    list_task_shells = _Async(Pyro.list_task_shells)
    start_task_service = _Async(Pyro.start_task_service)
    list_task_services = _Async(Pyro.list_task_services)
    status_task_service = _Async(Pyro.status_task_service)
    logs_task_service = _Async(Pyro.logs_task_service)
    restart_task_service = _Async(Pyro.restart_task_service)
    stop_task_service = _Async(Pyro.stop_task_service)

    # -- environments ------------------------------------------------------------------------
    list_environments = _Async(Pyro.list_environments)
    inspect_environment = _Async(Pyro.inspect_environment)
    pull_environment = _Async(Pyro.pull_environment, abandon=True)
    build_environment = _Async(Pyro.build_environment, abandon=True)
    push_environment = _Async(Pyro.push_environment, abandon=True)
    prune_environments = _Async(Pyro.prune_environments)
