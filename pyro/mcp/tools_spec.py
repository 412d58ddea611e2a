"""The spec tools: ``spec_validate``, ``plan`` and ``apply``.

A ``spec`` argument is the YAML document as JSON; it goes through pyro's one loader, exactly
like a file, so an error names the JSON pointer of the problem (``/spec/steps/0/run``). As for
a file, ``{{ vars.NAME }}`` templates are always rendered (with no ``vars``, a template is an
error rather than text passed on to the guest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context
from pydantic import Field

from pyro.execute.result import RunResult
from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.results import SpecSummary
from pyro.mcp.roots import ClientRoots, mcp_root
from pyro.mcp.schema import RUN_SCHEMA_URI
from pyro.mcp.tool import READ_ONLY, READ_REGISTRY, RUNS, tool
from pyro.plan.model import Plan
from pyro.sdk.cancel import Cancellation
from pyro.spec.model import RunSpec

T = TypeVar("T")

#: The ``spec`` argument: a plain object here; its JSON Schema is a resource.
RunSpecArg = Annotated[
    dict[str, Any],
    Field(description=f"The Run spec (the YAML as JSON); JSON Schema: resource {RUN_SCHEMA_URI}."),
]
AnySpecArg = Annotated[
    dict[str, Any],
    Field(
        description="The spec (kind Run or Environment; the YAML as JSON); JSON Schemas: "
        "resources pyro://schemas/run and pyro://schemas/environment."
    ),
]
Vars = Annotated[
    dict[str, Any] | None,
    Field(description="Values for '{{ vars.NAME }}' templates in the spec."),
]


class SpecTools(ToolGroup):
    """Validate, plan and apply spec documents given as data."""

    async def _call(self, work: Callable[[Cancellation], T]) -> T:
        return await in_thread(work, undo=self.sdk.delete_vm)

    @tool(READ_ONLY, title="Check a spec", profiles={"full": 18})
    async def spec_validate(self, spec: AnySpecArg, vars: Vars = None) -> SpecSummary:
        """Check a spec document (kind Run or Environment) without running anything.
        Returns valid=true with its kind and name, or a tool error listing every problem
        with its JSON pointer (e.g. /spec/steps/0/timeoutSeconds), what was expected and
        what was found.
        """
        loaded = await self._call(lambda token: self.sdk.load_spec(spec, vars=vars or {}))
        kind = "Run" if isinstance(loaded, RunSpec) else "Environment"
        return SpecSummary(kind=kind, name=loaded.metadata.name)

    @tool(READ_REGISTRY, title="Plan a run", profiles={"task-core": 9, "full": 19})
    async def plan(self, spec: RunSpecArg, vars: Vars = None, roots: ClientRoots = None) -> Plan:
        """Show what applying a Run spec would do, without doing it: the ordered steps
        (pull, build, boot, copy-in, exec, copy-out, cleanup) with pinned environment
        digests, plus `errors` and `applyable`. Cheap: no VM is started (it may ask the
        environment registry for digests).
        """
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).plan(spec, vars=vars or {})
        )

    @tool(RUNS, title="Apply a Run spec", profiles={"task-core": 10, "full": 20})
    async def apply(
        self,
        spec: RunSpecArg,
        vars: Vars = None,
        roots: ClientRoots = None,
        ctx: Context | None = None,
    ) -> RunResult:
        """Carry out a Run spec on a real microVM: boot, copy files in, run every step, copy
        artifacts out, clean up. Same as vm_run with `spec` (host paths and artifacts alike);
        a failing step gives ok=false and names failed_step.
        """
        report = self.reporter(ctx)
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).apply(
                spec,
                vars=vars or {},
                on_event=report.events(token.on_event),
                on_step=report.step,
                on_pull=report.pull,
            )
        )
