"""``Pyro.plan_many`` and ``Pyro.apply_many``: a matrix's instances, or runs on a cluster.

Delegation only: :mod:`pyro.cluster` expands, plans and dispatches. Without a cluster the
instances run on this host over its start slots; with ``Pyro(cluster="ray://HEAD:PORT")``
they run on the Ray cluster's nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.execute.prepare import SpecSource, prepare

if TYPE_CHECKING:
    from pyro.cluster.dispatch import Dispatch, Executor
    from pyro.cluster.instances import Job
    from pyro.execute.apply import OutputSink
    from pyro.execute.result import RunResult
    from pyro.host.confine import Root
    from pyro.machines.exec import Stdin
    from pyro.plan.model import Plan


class ManyMethods:
    """The methods of :class:`pyro.sdk.Pyro` that run many instances."""

    _root: Root | None
    _cluster: str | None
    _allow_tcg: bool
    _state_dir: Path | None

    def plan_many(
        self,
        spec_or_path: SpecSource,
        *,
        vars: Mapping[str, object] | None = None,
        run_name: str | None = None,
    ) -> list[Plan]:
        """One plan per instance of a Run spec's ``matrix`` (one plan for a spec without
        one), each named ``NAME[axis=value,…]``; non-applyable plans are returned, not raised.

        Raises:
            SpecError: the spec or its matrix is invalid (too many instances too).
            OutsideRootError: confined, and a host path is outside the root.
        """
        return [job.plan for job in self._jobs(spec_or_path, vars, run_name)]

    def apply_many(
        self,
        spec_or_path: SpecSource,
        *,
        vars: Mapping[str, object] | None = None,
        run_name: str | None = None,
        prepull: bool = False,
    ) -> Dispatch:
        """Run every instance of a Run spec's ``matrix`` (or the one run of a spec without
        one); yield each RunResult as it finishes (``instance`` says its values, attempt
        and node; the iterator's ``total`` how many will come). Here instances run as many
        at once as the host has start slots; with a cluster, on its nodes. Every instance
        is planned before any runs; closing the iterator early (or Ctrl-C) cancels what
        still runs and deletes its VMs. ``prepull`` (a cluster only) has every node that
        can run the instances pull their environment before any is submitted.

        Raises (before anything runs):
            SpecError: the spec or its matrix is invalid.
            PlanError: an instance's plan is not applyable (the first such is named).
            UsageError: ``prepull`` without a cluster.
            OutsideRootError: confined, and a host path is outside the root.
        """
        from pyro.cluster.dispatch import Dispatch
        from pyro.cluster.instances import check_applyable

        if prepull and self._cluster is None:
            from pyro.errors import UsageError

            raise UsageError(
                "prepull warms a cluster's nodes; this Pyro has no cluster",
                'give Pyro(cluster="ray://HOST:PORT"), or leave prepull off',
            )
        jobs = self._jobs(spec_or_path, vars, run_name)
        check_applyable(jobs)
        return Dispatch(jobs, self._executor(jobs, prepull))

    def _run_on_cluster(
        self,
        spec: Mapping[str, object],
        on_stdout: OutputSink | None,
        on_stderr: OutputSink | None,
        check: bool,
        stdin: Stdin | None,
    ) -> RunResult:
        """``run_in_vm`` on a cluster node: its one run through :meth:`apply_many`; the
        output sinks are told once the run has ended (output is not streamed across).

        Raises:
            UsageError: ``stdin`` given (it cannot follow the run to its node).
        """
        if stdin is not None:
            from pyro.errors import UsageError

            raise UsageError(
                "stdin cannot be sent to a command that runs on a cluster node",
                "copy the input into the run with a Run spec's files:, or run it here "
                "(a Pyro without cluster=)",
            )
        results = self.apply_many(spec)
        try:
            (result,) = list(results)
        finally:
            results.close()
        step = next((s.id for s in result.steps if s.action == "exec"), "exec.command")
        for sink, text in ((on_stdout, result.stdout), (on_stderr, result.stderr)):
            if sink is not None and text:
                sink(step, text.encode())
        if check:
            result.check_returncode()
        return result

    def _jobs(
        self, source: SpecSource, vars: Mapping[str, object] | None, run_name: str | None
    ) -> list[Job]:
        from pyro.cluster.instances import plan_jobs

        prepared = prepare(source, vars=vars, run_name=run_name, root=self._root)
        return plan_jobs(prepared, root=self._root)

    def _executor(self, jobs: list[Job], prepull: bool = False) -> Executor:
        if self._cluster is not None:
            from pyro.cluster.ray_exec import RayExecutor

            return RayExecutor.connect(
                self._cluster, jobs, prepull=prepull, root=self._root, allow_tcg=self._allow_tcg
            )
        from pyro.cluster.local import LocalExecutor
        from pyro.machines.registry import VMRegistry

        return LocalExecutor(registry=VMRegistry(self._state_dir), root=self._root)
