"""The :class:`Pyro` facade: the one API the CLI, the MCP server and Python users call.

Every method returns pydantic models (``.model_dump()`` gives plain data) and raises only
:class:`pyro.errors.PyroError` subclasses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.errors import SpecError, UsageError
from pyro.sdk_env import EnvironmentMethods
from pyro.sdk_task import TaskMethods
from pyro.sdk_vm import VMMethods
from pyro.spec.model import EnvironmentSpec, RunSpec

if TYPE_CHECKING:
    from pyro.execute.result import RunResult
    from pyro.execute.runner import EventSink, OutputSink
    from pyro.plan.model import Plan
    from pyro.spec.load import LoadedSpec

SpecSource = str | os.PathLike[str] | Mapping[str, Any] | RunSpec


@dataclass(frozen=True)
class Prepared:
    """A Run document ready to plan: where it came from and its sibling Environments."""

    loaded: LoadedSpec
    environments: dict[str, EnvironmentSpec] = field(default_factory=dict)

    @property
    def run(self) -> RunSpec:
        assert isinstance(self.loaded.spec, RunSpec)
        return self.loaded.spec


def prepare(
    source: SpecSource, *, vars: Mapping[str, object] | None = None, run_name: str | None = None
) -> Prepared:
    """Load the Run document to plan from a path, a spec mapping or a RunSpec.

    Raises:
        SpecError: the spec is invalid.
        UsageError: the file holds no Run document, or several and ``run_name`` is not given.
    """
    from pyro.spec.load import LoadedSpec, load_spec, load_spec_documents

    if isinstance(source, RunSpec):
        return Prepared(
            LoadedSpec(spec=source, path=None, base_dir=Path.cwd(), index=0, source_name="<spec>")
        )
    if isinstance(source, Mapping):
        return Prepared(load_spec(source, vars=vars))
    documents = load_spec_documents(source, vars=vars)
    runs = [doc for doc in documents if isinstance(doc.spec, RunSpec)]
    if run_name is not None:
        runs = [doc for doc in runs if doc.spec.metadata.name == run_name]
    names = ", ".join(doc.spec.metadata.name for doc in documents if isinstance(doc.spec, RunSpec))
    if len(runs) != 1:
        if run_name is not None:
            raise UsageError(
                f"{source} has no Run document named '{run_name}'",
                f"Run documents in the file: {names or 'none'}",
            )
        if not runs:
            raise UsageError(
                f"{source} has no Run document",
                "an Environment spec is built with 'pyro env build FILE'",
            )
        raise UsageError(
            f"{source} has {len(runs)} Run documents ({names})", "choose one with --run NAME"
        )
    environments = {
        d.spec.metadata.name: d.spec for d in documents if isinstance(d.spec, EnvironmentSpec)
    }
    return Prepared(runs[0], environments)


def make_plan(prepared: Prepared, *, resolve_remote: bool = True) -> Plan:
    """Gather the inventory and plan (the planner itself is pure).

    ``resolve_remote=False`` asks no registry for digests (a pull is planned without one).
    """
    from pyro.inventory import gather_inventory
    from pyro.plan.planner import plan as plan_run

    try:
        inventory = gather_inventory(
            refs=[prepared.run.spec.environment],
            base_dir=prepared.loaded.base_dir,
            local_environments=prepared.environments,
            resolve_remote=resolve_remote,
        )
    except SpecError as exc:
        # An Environment document of this file (or one it names) cannot be built from:
        # say which file, since the builder only saw the document.
        issues = [
            issue if issue.file else dataclasses.replace(issue, file=prepared.loaded.source_name)
            for issue in exc.issues
        ]
        raise SpecError(issues, exc.hint) from exc
    return plan_run(prepared.loaded, inventory, environments=prepared.environments)


def run_spec_for_command(
    environment: str,
    command: str | Sequence[str],
    *,
    vcpus: int | None = None,
    memory_mib: int | None = None,
    timeout_seconds: int = 600,
    network: str = "off",
    env: Mapping[str, str] | None = None,
    backend: str | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """The Run spec (as data) of one command in a fresh VM; validated like any spec."""
    step: dict[str, Any] = {"name": "command"}
    if isinstance(command, str):
        step["run"] = command
    else:
        step["argv"] = list(command)
    if cwd:
        step["cwd"] = cwd
    resources = {k: v for k, v in (("vcpus", vcpus), ("memoryMiB", memory_mib)) if v is not None}
    body: dict[str, Any] = {
        "environment": environment,
        "timeoutSeconds": timeout_seconds,
        "network": {"policy": network},
        "steps": [step],
    }
    if resources:
        body["resources"] = resources
    if env:
        body["env"] = dict(env)
    if backend:
        body["backend"] = backend
    return {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "run"}, "spec": body}


class Pyro(VMMethods, TaskMethods, EnvironmentMethods):
    """pyro's Python API. Cheap to create; holds no VM itself.

    Raises (every method): :class:`pyro.errors.PyroError` subclasses only.
    """

    def __init__(self, *, state_dir: Path | None = None) -> None:
        self._state_dir = state_dir

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
        """
        return make_plan(prepare(spec_or_path, vars=vars, run_name=run_name))

    def apply(
        self,
        spec_or_plan: SpecSource | Plan,
        *,
        vars: Mapping[str, object] | None = None,
        run_name: str | None = None,
        on_event: EventSink | None = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
    ) -> RunResult:
        """Plan (unless given a Plan) and carry the plan out on a real guest.

        Returns a RunResult also when a step fails (``ok`` false, ``failed_step`` set).

        Raises:
            SpecError: the spec is invalid.
            PlanError: the plan is not applyable.
            StalePlanError: a given plan's pinned digests no longer match.
        """
        from pyro.execute.runner import ApplyOptions, apply
        from pyro.plan.model import Plan

        if isinstance(spec_or_plan, Plan):
            plan, base_dir, environments = spec_or_plan, Path.cwd(), {}
        else:
            prepared = prepare(spec_or_plan, vars=vars, run_name=run_name)
            plan = make_plan(prepared)
            base_dir, environments = prepared.loaded.base_dir, prepared.environments
        options = ApplyOptions(base_dir=base_dir, environments=environments, registry=self.registry)
        if on_event is not None:
            options.on_event = on_event
        options.on_stdout, options.on_stderr = on_stdout, on_stderr
        return apply(plan, options)

    def run_in_vm(
        self,
        environment: str,
        command: str | Sequence[str],
        *,
        vcpus: int | None = None,
        memory_mib: int | None = None,
        timeout_seconds: int = 600,
        network: str = "off",
        env: Mapping[str, str] | None = None,
        backend: str | None = None,
        on_event: EventSink | None = None,
        on_stdout: OutputSink | None = None,
        on_stderr: OutputSink | None = None,
    ) -> RunResult:
        """Run one command in a fresh VM, then delete the VM (always).

        ``command`` is a shell string (run with ``sh -c``) or an argv list.

        Raises:
            SpecError: an argument is out of range (e.g. vcpus 0).
            PlanError: the environment is unknown or no backend can run it.
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
        return self.apply(spec, on_event=on_event, on_stdout=on_stdout, on_stderr=on_stderr)
