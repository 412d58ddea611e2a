"""Undoing what a cancelled call started: the VMs a worker thread created or was using.

A synchronous SDK call running in a worker thread cannot be interrupted from outside, but
the VM it runs in can be deleted (or a task stopped), which ends the command and makes the
call return. :class:`Cancellation` is told each VM the call uses as soon as it exists;
:meth:`Cancellation.cancel` then undoes them, and a VM reported after that is undone on the
spot. :class:`pyro.sdk.aio.AsyncPyro` cancels its calls this way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from pyro.errors import PyroError, StateError

if TYPE_CHECKING:
    from pyro.tasks.session import OpenSessions

#: Event phases after which a cancelled run stops at its next event (never during cleanup).
STOPPABLE_PHASES = frozenset({"install", "create", "start", "execute", "build", "pull"})


class CallCancelledError(StateError):
    """Raised inside a worker whose call was cancelled, to stop it at its next step."""

    default_hint = "nothing to do: the call was cancelled and what it started is gone"


class Cancellation:
    """The VMs (or tasks) one call uses, and what cancelling the call does to each:
    ``undo`` is ``delete_vm`` for a VM the call made, ``delete_task`` for a task being
    created, ``stop_task`` for a task being started. The task sessions the call opens
    while :meth:`scope` runs are closed first, which cancels their commands only (an
    ``exec_task`` needs nothing else: the task and other callers' commands go on)."""

    def __init__(self, undo: Callable[[str], object] | None = None) -> None:
        self._undo = undo
        self._lock = threading.Lock()
        self._ids: list[str] = []
        from pyro.tasks.session import OpenSessions

        self.sessions: OpenSessions = OpenSessions()
        self.cancelled = False

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Run the call's work inside this (in its worker thread)."""
        from pyro.tasks.session import collecting

        with collecting(self.sessions):
            yield

    def track(self, vm_id: str) -> None:
        """Remember ``vm_id`` as this call's; if the call is already cancelled, undo it now.

        Raises:
            CallCancelledError: the call was cancelled, so the worker must not go on.
        """
        with self._lock:
            if vm_id not in self._ids:
                self._ids.append(vm_id)
            cancelled = self.cancelled
        if cancelled:
            self._undo_one(vm_id)
            raise CallCancelledError("the call was cancelled")

    def on_event(self, group: str, phase: str, fields: Mapping[str, str]) -> None:
        """An SDK ``on_event`` sink: tracks VM ids and stops a cancelled run at its next phase.

        Raises:
            CallCancelledError: the call was cancelled (the executor then cleans up).
        """
        vm_id = fields.get("vm_id")
        if vm_id and phase != "cleanup":
            self.track(vm_id)
        if self.cancelled and phase in STOPPABLE_PHASES:
            raise CallCancelledError("the call was cancelled")

    def cancel(self) -> None:
        """Mark the call cancelled and undo every VM it reported so far (blocking)."""
        with self._lock:
            self.cancelled = True
            ids = list(self._ids)
        self.sessions.close()
        for vm_id in ids:
            self._undo_one(vm_id)

    def _undo_one(self, vm_id: str) -> None:
        # Already gone, or the worker is removing it right now: either way it goes.
        if self._undo is not None:
            with contextlib.suppress(PyroError):
                self._undo(vm_id)
