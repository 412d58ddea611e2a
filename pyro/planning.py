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
