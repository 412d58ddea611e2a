"""A prepared Run as the jobs a dispatcher runs: one per matrix instance (or one).

Planning many instances gathers the host's inventory once per environment reference,
not once per instance; each instance's copy-in sources are still digested for its plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pyro.execute.prepare import Prepared

if TYPE_CHECKING:
    from pyro.host.confine import Root
    from pyro.plan.inventory import Inventory
    from pyro.plan.model import Plan


@dataclass(frozen=True)
class Job:
    """One run to dispatch: the instance's prepared spec and the plan made for it here."""

    prepared: Prepared
    plan: Plan
    values: dict[str, str | int]

    @property
    def name(self) -> str:
        return self.plan.metadata.name

    @property
    def retries(self) -> int:
        return self.prepared.run.spec.retries


def expand(prepared: Prepared) -> list[Prepared]:
    """The instances of a matrix Run, each prepared on its own; a plain Run is its own one."""
    instances = prepared.loaded.instances
    if not instances:
        return [prepared]
    return [
        replace(
            prepared,
            loaded=replace(prepared.loaded, spec=instance.spec, instances=()),
            instance=instance.name,
        )
        for instance in instances
    ]


def plan_jobs(
    prepared: Prepared, *, resolve_remote: bool = True, root: Root | None = None
) -> list[Job]:
    """A job per instance, each planned against this host.

    Raises:
        SpecError: an Environment spec the Run names is invalid.
        OutsideRootError: with ``root``, a host path is outside it.
    """
    from pyro.execute.prepare import confine_plan, source_contents
    from pyro.host.gather import gather_inventory
    from pyro.plan.planner import plan as plan_run

    values = {i.name: i.values for i in prepared.loaded.instances}
    inventories: dict[str, Inventory] = {}
    jobs = []
    for instance in expand(prepared):
        ref = instance.run.spec.environment
        if ref not in inventories:
            inventories[ref] = gather_inventory(
                refs=[ref],
                base_dir=instance.loaded.base_dir,
                local_environments=instance.environments,
                resolve_remote=resolve_remote,
                root=root,
            )
        inventory = inventories[ref]
        sources = source_contents(instance, root)
        if sources:
            inventory = inventory.model_copy(update={"sources": sources})
        plan = plan_run(
            instance.loaded, inventory, environments=instance.environments, name=instance.instance
        )
        if root is not None:
            confine_plan(plan, root)
        jobs.append(Job(instance, plan, dict(values.get(instance.instance or "", {}))))
    return jobs


def check_applyable(jobs: list[Job]) -> None:
    """Refuse the whole dispatch when any instance's plan is not applyable.

    Raises:
        PlanError: naming the first such instance and its first problem.
    """
    from pyro.errors import PlanError

    for job in jobs:
        if not job.plan.applyable:
            first = job.plan.errors[0] if job.plan.errors else None
            raise PlanError(
                f"instance {job.name} cannot run" + (f": {first.message}" if first else ""),
                first.hint if first else "run 'pyro plan FILE' to see why",
            )
