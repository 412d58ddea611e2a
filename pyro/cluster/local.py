"""Running jobs on this host: as many at once as it has start slots.

Each attempt applies its plan in a worker thread. Start slots
(:mod:`pyro.host.startslots`) already bound how many guests start at once; this also
bounds how many run at once to the same number, so a matrix does not oversubscribe the
CPUs its guests run on. A worker thread cannot be interrupted from outside, so
:meth:`LocalExecutor.cancel` deletes the VMs its runs made (which ends their commands)
and stops each run at its next phase.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.cluster.instances import Job
from pyro.errors import PyroError
from pyro.execute.result import RunResult

if TYPE_CHECKING:
    from pyro.host.confine import Root
    from pyro.machines.registry import VMRegistry

#: Phases after which a cancelled run stops at its next event (never during cleanup).
STOPPABLE = frozenset({"install", "create", "start", "execute", "build", "pull"})


def parallelism() -> int:
    """How many runs this host runs at once: its start slots (at least one)."""
    from pyro.host.startslots import slot_count

    return max(1, slot_count())


class LocalExecutor:
    """Attempts as threads of this process, at most ``parallel`` at once."""

    def __init__(
        self,
        parallel: int | None = None,
        registry: VMRegistry | None = None,
        root: Root | None = None,
    ) -> None:
        from pyro.machines.registry import VMRegistry

        self._root = root
        self.parallel = parallel or parallelism()
        self._registry = registry or VMRegistry()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.parallel, thread_name_prefix="pyro-instance"
        )
        self._lock = threading.Lock()
        self._vms: set[str] = set()
        self._cancelled = False

    def submit(
        self, job: Job, attempt: int, avoid: frozenset[str]
    ) -> concurrent.futures.Future[RunResult]:
        return self._pool.submit(self._run, job)

    def _run(self, job: Job) -> RunResult:
        from pyro.execute.apply import ApplyOptions, apply

        mine: set[str] = set()

        def on_event(group: str, phase: str, fields: Mapping[str, str]) -> None:
            vm_id = fields.get("vm_id")
            with self._lock:
                if vm_id and phase != "cleanup" and vm_id not in mine:
                    mine.add(vm_id)
                    self._vms.add(vm_id)
                cancelled = self._cancelled
            if cancelled and phase in STOPPABLE:
                raise KeyboardInterrupt  # apply cleans up on it, as on Ctrl-C

        if self._cancelled:
            raise KeyboardInterrupt
        options = ApplyOptions(on_event=on_event, registry=self._registry)
        options.artifacts_dir = self._artifacts_dir(job)
        try:
            result = apply(job.plan, options)
        finally:
            with self._lock:
                self._vms -= mine
            if options.artifacts_dir is not None:
                with contextlib.suppress(OSError):
                    options.artifacts_dir.rmdir()  # only when empty: no artifact was copied
        if options.artifacts_dir is not None and options.artifacts_dir.is_dir():
            result.artifacts_dir = str(options.artifacts_dir)
        return result

    def _artifacts_dir(self, job: Job) -> Path | None:
        """A confined caller's fresh folder for the job's artifacts (as Pyro.apply's)."""
        from pyro.plan.model import CopyOutStep

        if self._root is None or not any(isinstance(s, CopyOutStep) for s in job.plan.steps):
            return None
        return self._root.output_folder(job.name)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            vms = list(self._vms)
        for vm_id in vms:
            with contextlib.suppress(PyroError):
                self._registry.delete(vm_id)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
