"""Preparing and planning a Run spec: the shared path of ``pyro plan``, the SDK and MCP.

Kept apart from :mod:`pyro.sdk` so that ``pyro plan`` imports only what planning needs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.errors import SpecError, UsageError
from pyro.spec.model import EnvironmentSpec, RunSpec

if TYPE_CHECKING:
    from pyro.host.confine import Root
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
    source: SpecSource,
    *,
    vars: Mapping[str, object] | None = None,
    run_name: str | None = None,
    root: Root | None = None,
) -> Prepared:
    """Load the Run document to plan from a path, a spec mapping or a RunSpec.

    With a ``root`` (a confined caller), a spec path must be inside it, and relative paths
    start at its base instead of the working directory.

    Raises:
        SpecError: the spec is invalid.
        UsageError: the file holds no Run document, or several and ``run_name`` is not given.
        OutsideRootError: the spec path is outside ``root``.
    """
    from pyro.spec.load import LoadedSpec, load_spec, load_spec_documents

    base_dir = root.base if root is not None else None
    if isinstance(source, RunSpec):
        return Prepared(
            LoadedSpec(
                spec=source,
                path=None,
                base_dir=base_dir or Path.cwd(),
                index=0,
                source_name="<spec>",
            )
        )
    if isinstance(source, Mapping):
        return Prepared(load_spec(source, vars=vars, base_dir=base_dir))
    if root is not None:
        source = root.confine(source, what="spec file")
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


def make_plan(prepared: Prepared, *, resolve_remote: bool = True, root: Root | None = None) -> Plan:
    """Gather the inventory and plan (the planner itself is pure).

    ``resolve_remote=False`` asks no registry for digests (a pull is planned without one).
    With a ``root``, every host path the plan names must be inside it
    (:func:`confine_plan`), and an Environment spec named by path is not read unless it is.

    Raises:
        SpecError: an Environment spec the Run names is invalid.
        OutsideRootError: a host path is outside ``root``.
    """
    from pyro.host.gather import gather_inventory
    from pyro.plan.planner import plan as plan_run

    try:
        inventory = gather_inventory(
            refs=[prepared.run.spec.environment],
            base_dir=prepared.loaded.base_dir,
            local_environments=prepared.environments,
            resolve_remote=resolve_remote,
            root=root,
        )
    except SpecError as exc:
        # An Environment document of this file (or one it names) cannot be built from:
        # say which file, since the builder only saw the document.
        issues = [
            issue if issue.file else dataclasses.replace(issue, file=prepared.loaded.source_name)
            for issue in exc.issues
        ]
        raise SpecError(issues, exc.hint) from exc
    plan = plan_run(prepared.loaded, inventory, environments=prepared.environments)
    if root is not None:
        confine_plan(plan, prepared.loaded.base_dir, root)
    return plan


def confine_plan(plan: Plan, base_dir: Path, root: Root) -> None:
    """Check, before anything boots, every host path a plan reads against ``root``:
    copy-in sources (which must also exist) and Environment specs it builds from.

    Artifacts are not checked here: a confined run copies them into a fresh folder
    (:meth:`pyro.host.confine.Root.output_folder`), never to a path the spec names; a root with
    no folder refuses a plan that has any.

    Raises:
        OutsideRootError: a path is outside ``root``.
        UsageError: a copy-in source does not exist.
    """
    from pyro.errors import OutsideRootError
    from pyro.plan.model import BuildStep, CopyInStep, CopyOutStep

    copies = [step for step in plan.steps if isinstance(step, CopyInStep)]
    for index, copy in enumerate(copies):
        what = f"files[{index}].source"
        path = root.confine(copy.source, what=what, base=base_dir)
        if not path.exists():
            raise UsageError(
                f"{what} {copy.source!r} does not exist (looked in {base_dir})",
                f"create it, or fix the path (relative paths start at {base_dir})",
            )
    for step in plan.steps:
        if isinstance(step, BuildStep):
            root.environment(step.ref, base=base_dir)
        if isinstance(step, CopyOutStep) and root.base is None:
            raise OutsideRootError(
                "artifacts are refused: no host folder is open to this caller", root.hint()
            )
