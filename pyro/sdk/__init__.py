"""The :class:`Pyro` facade: the one API the CLI, the MCP server and Python users call
(:class:`pyro.sdk.aio.AsyncPyro` has the same methods for asyncio).

Every method returns pydantic models (``.model_dump()`` gives plain data) and raises only
:class:`pyro.errors.PyroError` subclasses. The result types are named here too (imported
on first use), so ``from pyro import RunResult`` needs no knowledge of where they live.
"""

from __future__ import annotations

import contextlib
import copy
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.errors import UsageError
from pyro.execute.prepare import SpecSource, confine_plan, make_plan, prepare
from pyro.host.confine import Root
from pyro.lazy import lazy_attributes
from pyro.sdk.cluster_task import ClusterTaskMethods
from pyro.sdk.env import EnvironmentMethods, PrunedEntry
from pyro.sdk.many import ManyMethods
from pyro.sdk.task_procs import TaskProcessMethods
from pyro.sdk.task_state import TaskStateMethods
from pyro.sdk.vm import VMMethods
from pyro.spec.command import BackendName, CommandNetwork, run_spec_for_command
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.model import RunSpec

if TYPE_CHECKING:
    from pyro.environments.status import EnvironmentDetails, EnvironmentStatus, Progress
    from pyro.execute.apply import EventSink, OutputSink, StepSink
    from pyro.execute.pool import WarmPool
    from pyro.execute.result import RunResult, StepResult
    from pyro.machines.exec import ExecOutput, Stdin
    from pyro.machines.info import VMInfo, VMLogs
    from pyro.plan.model import Plan
    from pyro.tasks.files import FileEntry, SyncResult
    from pyro.tasks.journal import JournalEntry, TaskLogs
    from pyro.tasks.manager import TaskInfo
    from pyro.tasks.ops import TaskExecOutput
    from pyro.tasks.procs import ProcessOutput
    from pyro.tasks.service_specs import Readiness
    from pyro.tasks.services import ServiceInfo
    from pyro.tasks.shells import ShellInfo
    from pyro.tasks.snapshots import SnapshotInfo
    from pyro.tasks.transfer import TaskFileWritten

__all__ = [
    "BackendName",
    "CommandNetwork",
    "EnvironmentDetails",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "ExecOutput",
    "FileEntry",
    "JournalEntry",
    "Plan",
    "ProcessOutput",
    "PrunedEntry",
    "Pyro",
    "Readiness",
    "Root",
    "RunResult",
    "RunSpec",
    "ServiceInfo",
    "ShellInfo",
    "SnapshotInfo",
    "SpecSource",
    "StepResult",
    "SyncResult",
    "TaskExecOutput",
    "TaskFileWritten",
    "TaskInfo",
    "TaskLogs",
    "VMInfo",
    "VMLogs",
]

#: Where each public type not imported above is defined (imported on first use).
_HOMES = {
    "EnvironmentDetails": "pyro.environments.status",
    "EnvironmentStatus": "pyro.environments.status",
    "ExecOutput": "pyro.machines.exec",
    "FileEntry": "pyro.tasks.files",
    "JournalEntry": "pyro.tasks.journal",
    "Plan": "pyro.plan.model",
    "ProcessOutput": "pyro.tasks.procs",
    "Readiness": "pyro.tasks.service_specs",
    "RunResult": "pyro.execute.result",
    "ServiceInfo": "pyro.tasks.services",
    "ShellInfo": "pyro.tasks.shells",
    "SnapshotInfo": "pyro.tasks.snapshots",
    "StepResult": "pyro.execute.result",
    "SyncResult": "pyro.tasks.files",
    "TaskExecOutput": "pyro.tasks.ops",
    "TaskFileWritten": "pyro.tasks.transfer",
    "TaskInfo": "pyro.tasks.manager",
    "TaskLogs": "pyro.tasks.journal",
    "VMInfo": "pyro.machines.info",
    "VMLogs": "pyro.machines.info",
}

__getattr__ = lazy_attributes(__name__, _HOMES)


class Pyro(
    VMMethods,
    ClusterTaskMethods,
    TaskStateMethods,
    TaskProcessMethods,
    EnvironmentMethods,
    ManyMethods,
):
    """pyro's Python API. Cheap to create; holds no VM itself — unless ``warm_pool`` is set.

    ``warm_pool=N`` (1 to 8) keeps up to N restored guests ready for the next ``run_in_vm`` /
    ``apply`` of the shape last run (network ``off`` or ``egress``; docs/performance.md): for a
    long-lived host such as an MCP server. Those guests belong to this object: ``close()``
    (or leaving a ``with`` block, or the end of the process) deletes them.

    ``confine_to`` (off by default: the SDK's caller is trusted) holds every host path the
    methods are given, or that a spec names, to one folder or a list of them, by the rule
    the MCP server uses for its clients (:class:`pyro.host.confine.Root`): spec files,
    ``files[].source``, ``environment`` paths and their kernel fragments, seed and pushed
    folders, host files written into tasks and export outputs must resolve (symlinks
    followed) inside it, else :class:`~pyro.errors.OutsideRootError` before anything is
    read; relative paths start at its first folder; a run's artifacts go to a fresh folder
    ``.pyro-artifacts/<run>-<time>-<random>/`` there, named by ``RunResult.artifacts_dir``.

    ``cluster="ray://HOST:PORT"`` runs :meth:`apply_many` on a Ray cluster's nodes
    (``pip install 'pyro-vm[ray]'``; docs/scale-out.md); without it, instances run here.
    There ``backend: auto`` needs a node with KVM (``pyro-kvm``) unless ``allow_tcg=True``
    lets it run on nodes offering only TCG emulation.
    With it, :meth:`create_task` places a task on a node and the task methods given its
    id go there (:mod:`pyro.sdk.cluster_task`); ``close()`` deletes those tasks.

    Raises (every method): :class:`pyro.errors.PyroError` subclasses only.
    """

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        warm_pool: int = 0,
        confine_to: Root | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        cluster: str | None = None,
        allow_tcg: bool = False,
    ) -> None:
        from pyro.execute.pool import MAX_POOL_SIZE

        if not 0 <= warm_pool <= MAX_POOL_SIZE:
            raise UsageError(
                f"warm_pool must be 0 to {MAX_POOL_SIZE}, not {warm_pool}",
                "each pooled guest holds its memory while it waits; 1 or 2 is usually enough",
            )
        self._state_dir = state_dir
        self._pool_size = warm_pool
        self._warm_pool: WarmPool | None = None
        self._root = None if confine_to is None else Root.of(confine_to)
        self._cluster = None
        if cluster is not None:
            from pyro.cluster.address import parse_cluster

            self._cluster = parse_cluster(cluster)
        elif allow_tcg:
            raise UsageError(
                "allow_tcg is about a cluster's nodes; this Pyro has no cluster",
                'give Pyro(cluster="ray://HOST:PORT", allow_tcg=True), or leave it off '
                "(here backend auto already falls back to TCG)",
            )
        self._allow_tcg = allow_tcg
        self._owner = self  # the Pyro whose warm pool this one uses (see confined())

    def __enter__(self) -> Pyro:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> Root | None:
        """The folders host paths are confined to (None: not confined)."""
        return self._root

    def confined(
        self,
        root: Root | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    ) -> Pyro:
        """This Pyro with host paths confined to ``root`` (None: not confined), sharing its
        warm pool; cheap (the MCP server makes one per tool call, for that call's roots).

        Raises:
            UsageError: a folder of ``root`` does not exist.
        """
        view = copy.copy(self)
        view._root = None if root is None else Root.of(root)
        return view

    def close(self) -> None:
        """Delete the guests the warm pool holds and the tasks placed on a cluster (nothing
        to do without either). Idempotent."""
        if self._owner is self and self._warm_pool is not None:
            self._warm_pool.close()
        if self._owner is self:
            super().close()

    def _pool(self) -> WarmPool | None:
        if self._owner is not self:
            return self._owner._pool()
        if self._pool_size == 0:
            return None
        if self._warm_pool is None:
            from pyro.execute.pool import WarmPool
            from pyro.machines.registry import VMRegistry

            self._warm_pool = WarmPool(self._pool_size, VMRegistry(self._state_dir))
            # The guests die with the process anyway (QEMU's parent-death signal); this
            # also deletes their records and disks at a normal exit.
            weakref.finalize(self, self._warm_pool.close)
        return self._warm_pool

    # -- specs and plans -----------------------------------------------------------------

    def load_spec(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        vars: Mapping[str, object] | None = None,
    ) -> RunSpec | EnvironmentSpec:
        """Load and validate one spec document.

        Raises:
            SpecError: with file, line, column and JSON pointer of every problem.
        """
        from pyro.spec.load import load_spec

        if self._root is not None and not isinstance(source, Mapping):
            source = self._root.confine(source, what="spec file")
        return load_spec(source, vars=vars).spec

    def plan(
        self,
        spec_or_path: SpecSource,
        *,
        vars: Mapping[str, object] | None = None,
        run_name: str | None = None,
    ) -> Plan:
        """Plan a Run spec (path, mapping or RunSpec). A non-applyable plan is returned, not raised.

        Raises:
            SpecError: the spec is invalid.
            OutsideRootError: confined, and a host path is outside the root.
        """
        prepared = prepare(spec_or_path, vars=vars, run_name=run_name, root=self._root)
        return make_plan(prepared, root=self._root)

    def apply(
        self,
        spec_or_plan: SpecSource | Plan,
        *,
        vars: Mapping[str, object] | None = None,
        run_name: str | None = None,
        on_event: EventSink | None = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
        on_step: StepSink | None = None,
        on_pull: Progress | None = None,
        check: bool = False,
    ) -> RunResult:
        """Plan (unless given a Plan) and carry the plan out on a real guest.

        A Plan is applied as it stands, from any working directory: its host paths start at
        the spec folder it records. Returns a RunResult also when a step fails (``ok``
        false, ``failed_step`` set), unless ``check``: then that raises, as
        ``subprocess.run(check=True)`` does. ``on_step(number, total, step_id)`` is told as
        each plan step begins, ``on_pull(ProgressEvent)`` of a pull or build step's progress
        (the MCP server's progress notifications).

        Raises:
            SpecError: the spec is invalid.
            UsageError: ``vars`` or ``run_name`` given with a Plan (it is already resolved).
            PlanError: the plan is not applyable.
            StalePlanError: a pinned digest (environment content, build inputs, guest agent,
                copy-in source) no longer matches; nothing is done.
            OutsideRootError: confined, and a host path is outside the root (nothing boots).
            CommandFailedError: ``check``, and the run failed (it carries the RunResult).
        """
        return self._apply(
            spec_or_plan,
            vars=vars,
            run_name=run_name,
            sinks=(on_event, on_stdout, on_stderr, on_step, on_pull),
            check=check,
        )

    def _apply(
        self,
        spec_or_plan: SpecSource | Plan,
        *,
        vars: Mapping[str, object] | None,
        run_name: str | None,
        sinks: tuple[
            EventSink | None, OutputSink | None, OutputSink | None, StepSink | None, Progress | None
        ],
        check: bool,
        stdin: Stdin | None = None,
    ) -> RunResult:
        """:meth:`apply`, with the stdin of the plan's first command (``run_in_vm``'s)."""
        from pyro.execute.apply import ApplyOptions, apply
        from pyro.plan.model import CopyOutStep, Plan

        on_event, on_stdout, on_stderr, on_step, on_pull = sinks
        root = self._root
        if isinstance(spec_or_plan, Plan):
            plan = spec_or_plan
            given = [name for name, value in (("vars", vars), ("run_name", run_name)) if value]
            if given:
                raise UsageError(
                    f"{' and '.join(given)} cannot change a Plan: its variables and its Run "
                    "document were resolved when it was planned",
                    "plan the spec again with them ('pyro plan FILE --var K=V --run NAME "
                    "--json'), or apply the spec itself",
                )
            if root is not None:
                confine_plan(plan, root)
        else:
            prepared = prepare(spec_or_plan, vars=vars, run_name=run_name, root=root)
            plan = make_plan(prepared, root=root)
        artifacts_dir = None
        copies_out = any(isinstance(step, CopyOutStep) for step in plan.steps)
        if root is not None and plan.applyable and copies_out:
            artifacts_dir = root.output_folder(plan.metadata.name)
        options = ApplyOptions(
            artifacts_dir=artifacts_dir,
            registry=self.registry,
            pool=self._pool(),
            stdin=stdin,
        )
        if on_event is not None:
            options.on_event = on_event
        options.on_stdout, options.on_stderr = on_stdout, on_stderr
        options.on_step, options.on_pull = on_step, on_pull
        try:
            result = apply(plan, options)
        finally:
            if artifacts_dir is not None:
                with contextlib.suppress(OSError):
                    artifacts_dir.rmdir()  # only when empty: no artifact was copied
        if artifacts_dir is not None and artifacts_dir.is_dir():
            result.artifacts_dir = str(artifacts_dir)
        if check:
            result.check_returncode()
        return result

    def run_in_vm(
        self,
        environment: str,
        command: str | Sequence[str],
        *,
        vcpus: int | None = None,
        memory_mib: int | None = None,
        timeout_seconds: int = 600,
        network: CommandNetwork = "off",
        env: Mapping[str, str] | None = None,
        backend: BackendName | None = None,
        on_event: EventSink | None = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
        on_step: StepSink | None = None,
        on_pull: Progress | None = None,
        check: bool = False,
        stdin: Stdin | None = None,
    ) -> RunResult:
        """Run one command in a fresh VM, then delete the VM (always).

        With ``Pyro(cluster=…)`` the VM is on a cluster node (``environment`` must be in a
        registry the nodes reach); there ``on_stdout``/``on_stderr`` get the output when
        the command has ended, ``on_event``/``on_step``/``on_pull`` are not called and
        ``stdin`` is refused (``UsageError``).

        ``command`` is a shell string (run with ``sh -c``) or an argv list. The result's
        ``exit_code``, ``stdout`` and ``stderr`` are the command's; a failing command is a
        result (``ok`` false), unless ``check``. ``stdin`` (str, bytes or a binary file, read
        in chunks while the command runs) is the command's input; default ``/dev/null``.

        Raises:
            SpecError: an argument is out of range (e.g. vcpus 0).
            PlanError: the environment is unknown or no backend can run it.
            CommandFailedError: ``check``, and the command failed or timed out (it carries
                the RunResult).
        """
        spec = run_spec_for_command(
            environment,
            command,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_seconds=timeout_seconds,
            network=network,
            env=env,
            backend=backend,
        )
        if self._cluster is not None:
            return self._run_on_cluster(spec, on_stdout, on_stderr, check, stdin)
        return self._apply(
            spec,
            vars=None,
            run_name=None,
            sinks=(on_event, on_stdout, on_stderr, on_step, on_pull),
            check=check,
            stdin=stdin,
        )
