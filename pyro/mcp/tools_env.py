"""The ``env_*`` tools: which environments exist, and installing one ahead of time."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from pyro.environments.service import EnvironmentStatus
from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.results import EnvList
from pyro.mcp.roots import ClientRoots, mcp_root
from pyro.mcp.tool import READ_ONLY, RUNS, tool
from pyro.sdk.cancel import Cancellation


class EnvTools(ToolGroup):
    """Environments: what can be run, and fetching one ahead of time."""

    @tool(
        READ_ONLY, title="List environments", profiles={"task-core": 2, "workspace": 1, "full": 16}
    )
    async def env_list(self) -> EnvList:
        """The environments VMs can run (e.g. debian:12), from the catalog and the local
        cache, each with its state: installed ones start fastest; others are pulled or
        built on first use. Also the resource pyro://environments.
        """
        found = await in_thread(lambda token: self.sdk.list_environments(), undo=_keep)
        return EnvList(environments=list(found))

    @tool(RUNS, title="Install an environment", profiles={"full": 17}, idempotent=True)
    async def env_pull(
        self,
        environment: Annotated[
            str, Field(description="Environment name or oci:// reference, e.g. 'debian:12'.")
        ],
        roots: ClientRoots = None,
        ctx: Context | None = None,
    ) -> EnvironmentStatus:
        """Install an environment ahead of time (pull, or build when it has no source) so
        the first vm_run or task_create with it does not wait; a no-op when installed. A
        build can take minutes (a progressToken gets progress).
        """
        report = self.reporter(ctx)

        def work(token: Cancellation) -> EnvironmentStatus:
            details = self.sdk.confined(mcp_root(roots)).pull_environment(
                environment, progress=report.pull
            )
            fields = set(EnvironmentStatus.model_fields)
            return EnvironmentStatus.model_validate(details.model_dump(include=fields))

        return await in_thread(work, undo=_keep)


def _keep(vm_id: str) -> None:
    """Environment tools create no VM, so cancelling them has nothing to delete."""
