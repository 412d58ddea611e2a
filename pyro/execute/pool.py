"""A warm pool: restored guests kept ready by a long-lived host (an MCP server, an SDK object).

A one-shot run restores a saved guest in a fraction of a second; a host that runs many
commands can restore the next guest *before* it is asked for and hand it to the next run
of the same shape, leaving that run only its exec. The pool follows the shape of the most
recent run that could use it (environment, backend, vCPUs, memory, network policy), keeps
up to ``size`` guests of that shape, and refills in one background thread.

Every pooled guest is an ordinary ephemeral VM in the registry, owned by this process: the
run that takes it deletes it as usual; :meth:`WarmPool.close` deletes the ones never taken;
if the process dies, QEMU dies with it and the next pyro command reaps the records.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyro.errors import PyroError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.machines.create import Shape
    from pyro.machines.registry import VMRegistry
    from pyro.plan.model import BootStep

#: More than this many idle guests is a memory leak waiting to happen, not a pool.
MAX_POOL_SIZE = 8
#: A pooled guest is restored (or booted) within this; past it the fill gives up.
FILL_TIMEOUT_S = 60.0
#: How long close() waits for a fill in progress.
JOIN_TIMEOUT_S = 15.0


@dataclass
class Pooled:
    """A ready guest taken from the pool: its VM id and its agent connection."""

    vm_id: str
    client: AgentClient


def take_for_boot(pool: WarmPool, shape: Shape, step: BootStep, *, keep: bool) -> Pooled | None:
    """A pooled guest of ``shape`` for a plan's boot step, or None when the step may not use
    one: only ``restore`` boots qualify (network ``off`` or ``egress``, nothing published,
    VM deleted after)."""
    from pyro.vmm.snapshot import restorable, warm_enabled

    if step.mode != "restore" or step.backend is None or not warm_enabled():
        return None
    if not restorable(
        network_policy=step.network.policy, publish=bool(step.network.publish), kept=keep
    ):
        return None
    return pool.take(shape)


class WarmPool:
    """Up to ``size`` ready guests of the shape last asked for. Thread-safe."""

    def __init__(self, size: int, registry: VMRegistry) -> None:
        if not 1 <= size <= MAX_POOL_SIZE:
            raise ValueError(f"a warm pool holds 1 to {MAX_POOL_SIZE} guests, not {size}")
        self.size = size
        self.registry = registry
        self.last_error: Exception | None = None
        """Why the last fill failed (the runs then restore their own guests)."""
        self._shape: Shape | None = None
        self._ready: list[Pooled] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._filling = False
        self._worker: threading.Thread | None = None

    def take(self, shape: Shape) -> Pooled | None:
        """A ready guest of ``shape``, or None (the caller boots its own). Either way the
        pool now follows ``shape`` and refills in the background."""
        dropped: list[Pooled] = []
        taken: Pooled | None = None
        with self._lock:
            if self._closed:
                return None
            if shape != self._shape:
                dropped, self._ready, self._shape = self._ready, [], shape
            while self._ready and taken is None:
                candidate = self._ready.pop(0)
                if self._alive(candidate):
                    taken = candidate
                else:
                    dropped.append(candidate)
            self._start_worker()
            self._wake.notify()
        self._discard(dropped)
        return taken

    def ready_count(self) -> int:
        """How many guests wait in the pool now."""
        with self._lock:
            return len(self._ready)

    def wait_filled(self, timeout: float) -> bool:
        """Block until the pool is full (or stops filling); True when full."""
        with self._lock:
            self._wake.wait_for(
                lambda: (
                    self._closed
                    or len(self._ready) >= self.size
                    or not (self._filling or self._needs_fill())
                ),
                timeout=timeout,
            )
            return len(self._ready) >= self.size

    def close(self) -> None:
        """Stop filling and delete every guest still waiting. Idempotent."""
        with self._lock:
            self._closed = True
            dropped, self._ready = self._ready, []
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            # A restore takes well under a second; a fill stuck longer is left to the
            # reaping of VMs whose owner is gone (its QEMU dies with this process).
            worker.join(timeout=JOIN_TIMEOUT_S)
        self._discard(dropped)

    # -- the fill thread --------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._worker is None:
            self._filling = True
            self._worker = threading.Thread(target=self._fill_loop, name="pyro-warm-pool")
            self._worker.daemon = True  # close() (or the owner's death) ends the guests
            self._worker.start()

    def _fill_loop(self) -> None:
        while True:
            with self._lock:
                self._filling = False
                self._wake.notify_all()
                self._wake.wait_for(lambda: self._closed or self._needs_fill())
                if self._closed:
                    return
                shape = self._shape
                self._filling = True
            assert shape is not None
            try:
                pooled = self._fill(shape)
            except Exception as exc:  # a failed fill must never fail a run
                with self._lock:
                    self.last_error = exc
                    # Do not retry in a loop: the next take() asks again.
                    self._shape = None
                continue
            with self._lock:
                keep = not self._closed and shape == self._shape
                if keep:
                    self._ready.append(pooled)
            if not keep:
                self._discard([pooled])

    def _needs_fill(self) -> bool:
        return self._shape is not None and len(self._ready) < self.size

    def _fill(self, shape: Shape) -> Pooled:
        """Create a VM of ``shape`` and restore it (boot it when there is no snapshot)."""
        from pyro.execute import warm
        from pyro.machines.create import create

        record = create(self.registry, shape, ephemeral=True, vmm_outlives_owner=False)
        try:
            _, client = warm.start(
                self.registry,
                record,
                restore=True,
                save=False,
                boot_timeout=FILL_TIMEOUT_S,
                event=lambda status, reason: None,
            )
            warm.warm_up(client)
        except BaseException:
            with contextlib.suppress(PyroError, OSError):
                self.registry.delete(record.id)
            raise
        return Pooled(vm_id=record.id, client=client)

    def _alive(self, pooled: Pooled) -> bool:
        return self.registry.is_running(pooled.vm_id)

    def _discard(self, pooled: list[Pooled]) -> None:
        for item in pooled:
            with contextlib.suppress(Exception):
                item.client.close()
            with contextlib.suppress(PyroError, OSError):
                self.registry.delete(item.vm_id)
