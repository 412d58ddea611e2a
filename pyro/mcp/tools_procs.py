"""The ``task_shell_*`` and ``task_service_*`` tools: shells (PTY) and named services in a task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field

from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.tool import DESTRUCTIVE, READ_ONLY, RUNS, tool
from pyro.mcp.tools_task import TaskId
from pyro.sdk.cancel import Cancellation
from pyro.tasks.procs import ProcessOutput
from pyro.tasks.services import ServiceInfo
from pyro.tasks.shells import ShellInfo

T = TypeVar("T")

ShellName = Annotated[
    str, Field(description="Shell name (from task_shell_open).", pattern="^[a-z0-9][a-z0-9._-]*$")
]
ServiceName = Annotated[
    str,
    Field(description="Service name: a-z 0-9 . _ - (max 48).", pattern="^[a-z0-9][a-z0-9._-]*$"),
]
Cursor = Annotated[
    int, Field(description="Read from here: 0, then the cursor the last read returned.", ge=0)
]
Wait = Annotated[
    float, Field(description="Seconds to wait for new output if none yet (max 60).", ge=0, le=60)
]


class ShellDone(BaseModel):
    """What a shell request that returns nothing else reports."""

    task_id: str
    name: str = Field(description="The shell's name.")
    done: Literal["written", "resized", "signalled", "closed"] = Field(description="What was done.")


class ServiceList(BaseModel):
    """What ``task_service_list`` reports: the task's services by name."""

    services: list[ServiceInfo] = Field(description="The services, by name.")


def _nothing_to_undo(_: str) -> None:
    """Shells and services outlive a cancelled call on purpose: nothing to undo."""


class ProcessTools(ToolGroup):
    """Shells and services: persistent processes in a task's guest that outlive each call."""

    async def _call(self, work: Callable[[Cancellation], T]) -> T:
        return await in_thread(work, undo=_nothing_to_undo)

    @tool(RUNS, title="Open a shell in a task", profiles={"workspace": 25, "full": 38})
    async def task_shell_open(
        self,
        task_id: TaskId,
        name: Annotated[str | None, Field(description="Name for it (default 1, 2, …).")] = None,
        rows: Annotated[int, Field(description="Terminal rows.", ge=1, le=1000)] = 24,
        cols: Annotated[int, Field(description="Terminal columns.", ge=1, le=1000)] = 80,
    ) -> ShellInfo:
        """Open an interactive shell on a terminal in /workspace. It keeps its state (cwd,
        variables, running programs) across calls until task_shell_close. Type with
        task_shell_write, read with task_shell_read.
        """
        return await self._call(
            lambda t: self.sdk.open_task_shell(task_id, name, rows=rows, cols=cols)
        )

    @tool(RUNS, title="Type into a task shell", profiles={"workspace": 26, "full": 39})
    async def task_shell_write(
        self,
        task_id: TaskId,
        name: ShellName,
        text: Annotated[str, Field(description="Keys to type; end a line with \\n to run it.")],
    ) -> ShellDone:
        """Type into a shell (\\x03 is Ctrl-C). Read the output with task_shell_read."""
        await self._call(lambda t: self.sdk.write_task_shell(task_id, name, text))
        return ShellDone(task_id=task_id, name=name, done="written")

    @tool(READ_ONLY, title="Read a task shell", profiles={"workspace": 27, "full": 40})
    async def task_shell_read(
        self, task_id: TaskId, name: ShellName, cursor: Cursor = 0, wait_seconds: Wait = 1.0
    ) -> ProcessOutput:
        """Output of a shell since cursor (terminal output: includes the echo of what was
        typed). Pass the returned cursor next time; missed > 0 means older output is gone.
        """
        return await self._call(
            lambda t: self.sdk.read_task_shell(task_id, name, cursor, wait_s=wait_seconds)
        )

    @tool(RUNS, title="Resize a task shell", profiles={"workspace": 28, "full": 41})
    async def task_shell_resize(
        self,
        task_id: TaskId,
        name: ShellName,
        rows: Annotated[int, Field(description="Terminal rows.", ge=1, le=1000)],
        cols: Annotated[int, Field(description="Terminal columns.", ge=1, le=1000)],
    ) -> ShellDone:
        """Set a shell's terminal size (its programs get SIGWINCH)."""
        await self._call(lambda t: self.sdk.resize_task_shell(task_id, name, rows, cols))
        return ShellDone(task_id=task_id, name=name, done="resized")

    @tool(RUNS, title="Signal a task shell", profiles={"workspace": 29, "full": 42})
    async def task_shell_signal(
        self,
        task_id: TaskId,
        name: ShellName,
        signal: Annotated[str, Field(description="INT (Ctrl-C), TERM, KILL, … or a number.")] = (
            "INT"
        ),
    ) -> ShellDone:
        """Signal the program running in a shell's foreground; the shell itself stays."""
        await self._call(lambda t: self.sdk.signal_task_shell(task_id, name, signal))
        return ShellDone(task_id=task_id, name=name, done="signalled")

    @tool(DESTRUCTIVE, title="Close a task shell", profiles={"workspace": 30, "full": 43})
    async def task_shell_close(self, task_id: TaskId, name: ShellName) -> ShellDone:
        """End a shell and everything it started; its output is gone."""
        await self._call(lambda t: self.sdk.close_task_shell(task_id, name))
        return ShellDone(task_id=task_id, name=name, done="closed")

    @tool(RUNS, title="Start a task service", profiles={"workspace": 31, "full": 44})
    async def task_service_start(
        self,
        task_id: TaskId,
        name: ServiceName,
        command: Annotated[
            str | list[str], Field(description="Shell command line or argv (stays running).")
        ],
        ready_port: Annotated[
            int | None, Field(description="Ready when this guest port accepts TCP.")
        ] = None,
        ready_http: Annotated[
            str | None, Field(description="Ready when GET of this path on ready_port is < 400.")
        ] = None,
        ready_cmd: Annotated[str | None, Field(description="Ready when this exits 0.")] = None,
        ready_timeout_seconds: Annotated[
            float, Field(description="Give up waiting after this long.", gt=0, le=3600)
        ] = 60,
        env: Annotated[
            dict[str, str] | None, Field(description="Environment variables for it.")
        ] = None,
        cwd: Annotated[str | None, Field(description="Default /workspace.")] = None,
    ) -> ServiceInfo:
        """Start a named long-running process (dev server, database) in a task and wait until
        it is ready. It runs on after this call; see task_service_logs.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
        return await self._call(
            lambda t: self.sdk.start_task_service(
                task_id,
                name,
                argv,
                env=env,
                cwd=cwd,
                ready_port=ready_port,
                ready_http=ready_http,
                ready_cmd=ready_cmd,
                ready_timeout_s=ready_timeout_seconds,
            )
        )

    @tool(READ_ONLY, title="List task services", profiles={"workspace": 32, "full": 45})
    async def task_service_list(self, task_id: TaskId) -> ServiceList:
        """The task's services with their state, pid and readiness check."""
        services = await self._call(lambda t: self.sdk.list_task_services(task_id))
        return ServiceList(services=services)

    @tool(READ_ONLY, title="Task service status", profiles={"workspace": 33, "full": 46})
    async def task_service_status(self, task_id: TaskId, name: ServiceName) -> ServiceInfo:
        """State, pid, exit code and readiness check of one service."""
        return await self._call(lambda t: self.sdk.status_task_service(task_id, name))

    @tool(READ_ONLY, title="Task service log", profiles={"workspace": 34, "full": 47})
    async def task_service_logs(
        self, task_id: TaskId, name: ServiceName, cursor: Cursor = 0, wait_seconds: Wait = 0
    ) -> ProcessOutput:
        """A service's stdout and stderr since cursor; pass the returned cursor to follow."""
        return await self._call(
            lambda t: self.sdk.logs_task_service(task_id, name, cursor, wait_s=wait_seconds)
        )

    @tool(RUNS, title="Restart a task service", profiles={"workspace": 35, "full": 48})
    async def task_service_restart(self, task_id: TaskId, name: ServiceName) -> ServiceInfo:
        """Kill a service and start it again from its definition; waits until ready."""
        return await self._call(lambda t: self.sdk.restart_task_service(task_id, name))

    @tool(DESTRUCTIVE, title="Stop a task service", profiles={"workspace": 36, "full": 49})
    async def task_service_stop(self, task_id: TaskId, name: ServiceName) -> ServiceInfo:
        """Stop a service (TERM, then KILL after 10 s); its log stays readable."""
        return await self._call(lambda t: self.sdk.stop_task_service(task_id, name))
