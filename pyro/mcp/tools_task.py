"""The ``task_*`` tools: persistent workspaces for work that needs state across calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, TypeVar

from mcp.server.mcpserver import Context
from pydantic import Field

from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.results import Deleted, TaskList
from pyro.mcp.roots import ClientRoots, mcp_root
from pyro.mcp.stdin import StdinArg, stdin_bytes
from pyro.mcp.stream import streaming
from pyro.mcp.tool import DESTRUCTIVE, READ_ONLY, RUNS, tool
from pyro.mcp.tools_vm import ID_PATTERN
from pyro.sdk.cancel import Cancellation
from pyro.sdk.task import TaskLogs
from pyro.tasks.manager import TaskInfo
from pyro.tasks.ops import TaskExecOutput

T = TypeVar("T")

TaskId = Annotated[str, Field(description="Task id (from task_create).", pattern=ID_PATTERN)]
Command = Annotated[
    str | list[str],
    Field(description="A shell command line (run with 'sh -c') or an argv list."),
]


class TaskTools(ToolGroup):
    """Task workspaces: one VM kept across calls, with ``/workspace`` and a command journal."""

    async def _call(
        self,
        work: Callable[[Cancellation], T],
        *,
        undo: Callable[[str], object] | None = None,
        owned: Callable[[T], Iterable[str]] | None = None,
    ) -> T:
        return await in_thread(work, undo=undo or self.sdk.delete_task, owned=owned)

    @tool(
        RUNS, title="Create a task workspace", profiles={"task-core": 3, "workspace": 2, "full": 10}
    )
    async def task_create(
        self,
        environment: Annotated[
            str, Field(description="Environment name, e.g. 'debian:12' (see env_list).")
        ],
        seed_path: Annotated[
            str | None,
            Field(
                description="A host folder whose files are copied to /workspace; it must be "
                "inside the server's root folder (relative paths start there)."
            ),
        ] = None,
        name: Annotated[str | None, Field(description="A name to recognise it by.")] = None,
        vcpus: Annotated[int | None, Field(description="Guest vCPUs.")] = None,
        memory_mib: Annotated[int | None, Field(description="Guest memory in MiB.")] = None,
        ttl_seconds: Annotated[
            int | None, Field(description="Delete the task this long after creation.")
        ] = None,
        idle_timeout_seconds: Annotated[
            int | None, Field(description="Stop the task after this long without commands.")
        ] = None,
        network: Annotated[
            str | None,
            Field(description="off (default), egress or allowlist; kept for every boot."),
        ] = None,
        allow: Annotated[
            list[str] | None, Field(description="HOST[:PORT] destinations for allowlist.")
        ] = None,
        publish: Annotated[
            list[str] | None,
            Field(description="'HOSTPORT:GUESTPORT': a guest port on the host's 127.0.0.1."),
        ] = None,
        roots: ClientRoots = None,
    ) -> TaskInfo:
        """Create and boot a persistent task VM for work that needs state across several
        commands (install, then build, then test). Its /workspace can be seeded from a host
        folder. Run commands with task_exec; the task stays until task_delete (or its TTL),
        so ALWAYS call task_delete when done. For a single command use vm_run instead.
        """

        def work(token: Cancellation) -> TaskInfo:
            return self.sdk.confined(mcp_root(roots)).create_task(
                environment,
                seed_path=seed_path,
                name=name,
                vcpus=vcpus,
                memory_mib=memory_mib,
                ttl_seconds=ttl_seconds,
                idle_timeout_seconds=idle_timeout_seconds,
                network=network or "off",
                allow=allow or (),
                publish=publish or (),
            )

        return await self._call(work, owned=lambda info: [info.id])

    @tool(
        RUNS, title="Run a command in a task", profiles={"task-core": 4, "workspace": 3, "full": 11}
    )
    async def task_exec(
        self,
        task_id: TaskId,
        command: Command,
        timeout_seconds: Annotated[
            int, Field(description="Limit for this command; exit code 124 when reached.")
        ] = 600,
        cwd: Annotated[
            str | None, Field(description="Working directory (default /workspace).")
        ] = None,
        env: Annotated[
            dict[str, str] | None, Field(description="Environment variables for the command.")
        ] = None,
        stdin: StdinArg = None,
        ctx: Context | None = None,
    ) -> TaskExecOutput:
        """Run one command in a task; files and installed packages stay for the next
        task_exec. A failing command is a result, not an error. Boots a stopped task
        first. Output streams as log messages (logger pyro.stdout/pyro.stderr).
        """
        report = self.reporter(ctx)
        data = stdin_bytes(stdin)

        def work(token: Cancellation) -> TaskExecOutput:
            # Cancelling closes the call's session: its command is cancelled in the guest;
            # the task and other calls' commands go on.
            with streaming(report) as out:
                return self.sdk.exec_task(
                    task_id,
                    command,
                    timeout_seconds=timeout_seconds,
                    cwd=cwd,
                    env=env,
                    on_stdout=out.stdout,
                    on_stderr=out.stderr,
                    stdin=data,
                )

        return await self._call(work)

    @tool(READ_ONLY, title="Task status", profiles={"task-core": 5, "workspace": 4, "full": 12})
    async def task_status(self, task_id: TaskId) -> TaskInfo:
        """State, resources, uptime, number of commands and the last command of a task."""
        return await self._call(lambda token: self.sdk.status_task(task_id))

    @tool(
        READ_ONLY,
        title="Task command journal",
        profiles={"task-core": 6, "workspace": 5, "full": 13},
    )
    async def task_logs(
        self,
        task_id: TaskId,
        tail: Annotated[int | None, Field(description="Only the last N commands.")] = None,
    ) -> TaskLogs:
        """The task's command journal: every command run, with exit code and output."""
        return await self._call(lambda token: self.sdk.logs_task(task_id, tail=tail))

    @tool(
        DESTRUCTIVE,
        title="Delete a task",
        profiles={"task-core": 7, "workspace": 6, "full": 14},
        idempotent=True,
    )
    async def task_delete(self, task_id: TaskId) -> Deleted:
        """Delete a task: its VM, disk, snapshots and journal. Deleting a missing task
        reports deleted=false.
        """
        deleted = await self._call(lambda token: self.sdk.delete_task(task_id))
        return Deleted(id=task_id, deleted=deleted)

    @tool(READ_ONLY, title="List tasks", profiles={"task-core": 8, "workspace": 7, "full": 15})
    async def task_list(self) -> TaskList:
        """Every task that exists, oldest first (to find tasks to reuse or delete)."""
        return TaskList(tasks=await self._call(lambda token: self.sdk.list_tasks()))
