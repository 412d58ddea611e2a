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
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.model import RunSpec

if TYPE_CHECKING:
    from pyro.host.confine import Root
    from pyro.plan.inventory import DiskCopy, SourceContent
    from pyro.plan.model import BuildStep, Plan
    from pyro.spec.load import LoadedSpec

SpecSource = str | os.PathLike[str] | Mapping[str, Any] | RunSpec


@dataclass(frozen=True)
class Prepared:
    """A Run document ready to plan: where it came from and its sibling Environments."""

    loaded: LoadedSpec
    environments: dict[str, EnvironmentSpec] = field(default_factory=dict)
    instance: str | None = None
    """The matrix instance this is (its name names the plan); None: not an instance."""

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
    """Gather the inventory, digest the copy-in sources, and plan (the planner itself is pure).

    ``resolve_remote=False`` asks no registry for digests (a pull is planned without one).
    With a ``root``, every host path the plan names must be inside it
    (:func:`confine_plan`), and no copy-in source or Environment spec named by path is read
    unless it is.

    Raises:
        SpecError: an Environment spec the Run names is invalid.
        OutsideRootError: a host path is outside ``root``.
    """
    from pyro.host.gather import gather_inventory
    from pyro.plan.planner import plan as plan_run

    if prepared.loaded.instances:
        raise UsageError(
            f"{prepared.loaded.source_name} is a matrix of {len(prepared.loaded.instances)} "
            "instances, not one run",
            "apply it with 'pyro apply' or Pyro.apply_many(); plan it with 'pyro plan' or "
            "Pyro.plan_many()",
        )
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
    sources = source_contents(prepared, root)
    if sources:
        inventory = inventory.model_copy(update={"sources": sources, "disk_copy": disk_copy()})
    plan = plan_run(
        prepared.loaded, inventory, environments=prepared.environments, name=prepared.instance
    )
    if root is not None:
        confine_plan(plan, root)
    return plan


def source_contents(prepared: Prepared, root: Root | None = None) -> list[SourceContent]:
    """The content digest of each copy-in source of the Run, for the plan to pin.

    Raises:
        OutsideRootError: with ``root``, a source is outside it (it is not read).
    """
    files = prepared.run.spec.files
    if not files:
        return []
    from pyro.execute.transfer import source_digest, source_size
    from pyro.plan.inventory import SourceContent

    base_dir = prepared.loaded.base_dir
    found: dict[str, SourceContent] = {}
    for index, copy in enumerate(files):
        if copy.source in found:
            continue
        if root is not None:
            root.confine(copy.source, what=f"files[{index}].source", base=base_dir)
        digest = source_digest(base_dir, copy.source)
        files_count, size = source_size(base_dir, copy.source) if digest else (0, 0)
        found[copy.source] = SourceContent(
            path=copy.source, digest=digest, files=files_count, bytes=size
        )
    return [found[path] for path in sorted(found)]


def disk_copy() -> DiskCopy:
    """The rule by which the planner sends a copy-in by the VM's spare disk
    (:func:`pyro.machines.pushdisk.rule`).

    Raises:
        UsageError: a bad ``$PYRO_DATA_DISK_MIN_BYTES``.
    """
    from pyro.machines.pushdisk import rule
    from pyro.plan.inventory import DiskCopy

    min_bytes, file_weight = rule()
    forced = os.environ.get("PYRO_DATA_DISK_MIN_BYTES", "").strip() != ""
    return DiskCopy(
        min_bytes=min_bytes,
        file_weight=file_weight,
        restored_min_bytes=min_bytes if forced else None,
    )


def spec_dir(plan: Plan) -> Path:
    """The folder a plan's relative host paths start from (``Plan.spec_dir``).

    Raises:
        PlanError: the plan records none (it was planned from a bare spec object).
    """
    if plan.spec_dir is None:
        from pyro.errors import PlanError

        raise PlanError(
            f"plan {plan.metadata.name} records no spec folder for its host paths",
            "make the plan with 'pyro plan FILE --json' or Pyro.plan(), which record it",
        )
    return Path(plan.spec_dir)


def build_folder(plan: Plan, step: BuildStep) -> Path:
    """The folder a build step's Environment document reads its kernel fragment from.

    Raises:
        PlanError: the step's folder is relative to a spec folder the plan does not record.
    """
    if step.folder is None:
        from pyro.environments.catalog import catalog_dir

        return catalog_dir()
    return spec_dir(plan) / step.folder


def confine_plan(plan: Plan, root: Root) -> None:
    """Check, before anything boots, every host path a plan reads against ``root``:
    copy-in sources (which must also exist) and the kernel fragments of Environment
    documents it builds (other than pyro's own catalog's).

    Artifacts are not checked here: a confined run copies them into a fresh folder
    (:meth:`pyro.host.confine.Root.output_folder`), never to a path the spec names; a root with
    no folder refuses a plan that has any.

    Raises:
        OutsideRootError: a path is outside ``root``.
        UsageError: a copy-in source does not exist.
        PlanError: the plan has host paths but records no spec folder.
    """
    from pyro.errors import OutsideRootError
    from pyro.plan.model import BuildStep, CopyInStep, CopyOutStep

    copies = [step for step in plan.steps if isinstance(step, CopyInStep)]
    for index, copy in enumerate(copies):
        what = f"files[{index}].source"
        base_dir = spec_dir(plan)  # raises only for a plan that names host paths
        path = root.confine(copy.source, what=what, base=base_dir)
        if not path.exists():
            raise UsageError(
                f"{what} {copy.source!r} does not exist (looked in {base_dir})",
                f"create it, or fix the path (relative paths start at {base_dir})",
            )
    for step in plan.steps:
        if isinstance(step, BuildStep) and step.folder is not None:
            kernel = step.document.spec.kernel
            if kernel is not None:  # an image-based spec reads no host file
                root.fragment(kernel.fragment, build_folder(plan, step), step.ref)
        if isinstance(step, CopyOutStep) and root.base is None:
            raise OutsideRootError(
                "artifacts are refused: no host folder is open to this caller", root.hint()
            )
