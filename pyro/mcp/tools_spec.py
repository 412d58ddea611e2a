"""The spec tools: ``spec_validate``, ``plan`` and ``apply``.

A ``spec`` argument is the YAML document as JSON; it goes through pyro's one loader, exactly
like a file, so an error names the JSON pointer of the problem (``/spec/steps/0/run``). As for
a file, ``{{ vars.NAME }}`` templates are always rendered (with no ``vars``, a template is an
error rather than text passed on to the guest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import Field

from pyro.execute.result import RunResult
from pyro.mcp.calls import Cancellation, in_thread
from pyro.mcp.results import SpecSummary
from pyro.mcp.roots import ClientRoots, mcp_root
from pyro.mcp.tool import READ_ONLY, RUNS, SpecParameter, tool
from pyro.plan.model import Plan
from pyro.sdk import Pyro
from pyro.spec.model import RunSpec

T = TypeVar("T")

#: The ``spec`` argument; its schema is replaced by the spec models' (see pyro.mcp.schema).
Spec = Annotated[dict[str, Any], Field(description="The spec document.")]
RUN_SPEC = SpecParameter("spec", ("RunSpec",), "The Run spec document, exactly the YAML as JSON.")
ANY_SPEC = SpecParameter(
    "spec",
    ("RunSpec", "EnvironmentSpec"),
    "The spec document to check (kind Run or Environment), exactly the YAML as JSON.",
)
Vars = Annotated[
    dict[str, Any] | None,
    Field(description="Values for '{{ vars.NAME }}' templates in the spec."),
]


class SpecTools:
    """Validate, plan and apply spec documents given as data."""

    def __init__(self, sdk: Pyro) -> None:
        self.sdk = sdk

    async def _call(self, work: Callable[[Cancellation], T]) -> T:
        return await in_thread(work, undo=self.sdk.delete_vm)

    @tool(READ_ONLY, profiles={"full": 18}, spec=ANY_SPEC)
    async def spec_validate(self, spec: Spec, vars: Vars = None) -> SpecSummary:
        """Check a spec document (kind Run or Environment) without running anything.
        Returns valid=true with its kind and name, or a tool error listing every problem
        with its JSON pointer (e.g. /spec/steps/0/timeoutSeconds), what was expected and
        what was found.
        """
        loaded = await self._call(lambda token: self.sdk.load_spec(spec, vars=vars or {}))
        kind = "Run" if isinstance(loaded, RunSpec) else "Environment"
        return SpecSummary(kind=kind, name=loaded.metadata.name)

    @tool(READ_ONLY, profiles={"task-core": 9, "full": 19}, spec=RUN_SPEC)
    async def plan(self, spec: Spec, vars: Vars = None, roots: ClientRoots = None) -> Plan:
        """Show what applying a Run spec would do, without doing it: the ordered steps
        (pull, build, boot, copy-in, exec, copy-out, cleanup) with pinned environment
        digests, plus `errors` and `applyable`. Cheap: no VM is started.
        """
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).plan(spec, vars=vars or {})
        )

    @tool(RUNS, profiles={"task-core": 10, "full": 20}, spec=RUN_SPEC)
    async def apply(self, spec: Spec, vars: Vars = None, roots: ClientRoots = None) -> RunResult:
        """Carry out a Run spec on a real microVM: boot, copy files in, run every step, copy
        artifacts out, clean up. Returns each step's exit code and output; a failing step
        gives ok=false and names failed_step. Host paths (files[].source, an environment
        spec path) must be inside the server's root folder, and relative ones start there;
        artifacts are copied into a new folder under it, named by artifacts_dir in the
        result. Same as vm_run with `spec`; for a single command, vm_run with environment +
        command is simpler.
        """
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).apply(
                spec, vars=vars or {}, on_event=token.on_event
            )
        )
