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

ShellName = Annotated[str, Field(description="Shell name.")]
ServiceName = Annotated[str, Field(description="Service name (a-z 0-9 . _ -).")]
Cursor = Annotated[int, Field(description="0, then the cursor the last read returned.", ge=0)]
Wait = Annotated[float, Field(description="Seconds to wait for output (max 60).", ge=0, le=60)]


class ShellDone(BaseModel):
    """What a shell request that returns nothing else reports."""

    done: Literal["written", "resized", "signalled", "closed"] = Field(description="What was done.")


class ServiceList(BaseModel):
    """What ``task_service_list`` reports: the task's services by name."""

    services: list[ServiceInfo] = Field(description="The services, by name.")


class ShellBrief(BaseModel):
    """What ``task_shell_open`` reports (the SDK's ``ShellInfo``, less what a client has)."""

    name: str = Field(description="Its name, for the other task_shell_* calls.")
    pid: int = Field(description="Its pid in the guest.")

    @classmethod
    def of(cls, info: ShellInfo) -> ShellBrief:
        return cls(name=info.name, pid=info.pid)


class ServiceBrief(BaseModel):
    """What start/restart/stop report; ``task_service_status`` has the rest."""

    name: str = Field(description="Service name.")
    state: str = Field(description="running, exited, stopped, paused or not running.")
    pid: int | None = Field(description="Its pid in the guest.")
    exit_code: int | None = Field(description="Exit code once ended.")

    @classmethod
    def of(cls, info: ServiceInfo) -> ServiceBrief:
        return cls.model_validate(info.model_dump(include=set(cls.model_fields)))


class Output(BaseModel):
    """Output from a cursor (the SDK's ``ProcessOutput``, less the names a client sent)."""

    data: str = Field(description="Output since the cursor.")
    cursor: int = Field(description="The cursor for the next read.")
    missed: int = Field(description="Bytes lost before data (1 MiB is kept).")
    running: bool = Field(description="It still runs.")
    exit_code: int | None = Field(description="Exit code once ended.")

    @classmethod
    def of(cls, got: ProcessOutput) -> Output:
        return cls(
            data=got.text,
            cursor=got.cursor,
            missed=got.missed,
            running=got.running,
            exit_code=got.exit_code,
        )


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
        rows: Annotated[int, Field(description="Terminal rows.")] = 24,
        cols: Annotated[int, Field(description="Terminal columns.")] = 80,
    ) -> ShellBrief:
        """Open a shell on a terminal in /workspace, kept across calls until closed."""
        return ShellBrief.of(
            await self._call(
                lambda t: self.sdk.open_task_shell(task_id, name, rows=rows, cols=cols)
            )
        )

    @tool(RUNS, title="Type into a task shell", profiles={"workspace": 26, "full": 39})
    async def task_shell_write(
        self,
        task_id: TaskId,
        name: ShellName,
        text: Annotated[str, Field(description="Keys to type.")],
    ) -> ShellDone:
        """Type into a shell: \\n runs a line, \\x03 is Ctrl-C."""
        await self._call(lambda t: self.sdk.write_task_shell(task_id, name, text))
        return ShellDone(done="written")

    @tool(READ_ONLY, title="Read a task shell", profiles={"workspace": 27, "full": 40})
    async def task_shell_read(
        self, task_id: TaskId, name: ShellName, cursor: Cursor = 0, wait_seconds: Wait = 1.0
    ) -> Output:
        """A shell's output since cursor (typed keys echo); pass the returned cursor next."""
        return Output.of(
            await self._call(
                lambda t: self.sdk.read_task_shell(task_id, name, cursor, wait_s=wait_seconds)
            )
        )

    @tool(RUNS, title="Resize a task shell", profiles={"workspace": 28, "full": 41})
    async def task_shell_resize(
        self,
        task_id: TaskId,
        name: ShellName,
        rows: Annotated[int, Field(description="Terminal rows.")],
        cols: Annotated[int, Field(description="Terminal columns.")],
    ) -> ShellDone:
        """Set a shell's terminal size (its programs get SIGWINCH)."""
        await self._call(lambda t: self.sdk.resize_task_shell(task_id, name, rows, cols))
        return ShellDone(done="resized")

    @tool(RUNS, title="Signal a task shell", profiles={"workspace": 29, "full": 42})
    async def task_shell_signal(
        self,
        task_id: TaskId,
        name: ShellName,
        signal: Annotated[str, Field(description="INT (Ctrl-C), TERM, KILL, … or a number.")] = (
            "INT"
        ),
    ) -> ShellDone:
        """Signal a shell's foreground program; the shell stays."""
        await self._call(lambda t: self.sdk.signal_task_shell(task_id, name, signal))
        return ShellDone(done="signalled")

    @tool(DESTRUCTIVE, title="Close a task shell", profiles={"workspace": 30, "full": 43})
    async def task_shell_close(self, task_id: TaskId, name: ShellName) -> ShellDone:
        """End a shell and all the programs it started."""
        await self._call(lambda t: self.sdk.close_task_shell(task_id, name))
        return ShellDone(done="closed")

    @tool(RUNS, title="Start a task service", profiles={"workspace": 31, "full": 44})
    async def task_service_start(
        self,
        task_id: TaskId,
        name: ServiceName,
        command: Annotated[str | list[str], Field(description="Shell command line or argv.")],
        ready_port: Annotated[
            int | None, Field(description="Ready when this port accepts TCP.")
        ] = (None),
        ready_http: Annotated[
            str | None, Field(description="Ready when GET it on ready_port is < 400.")
        ] = None,
        ready_cmd: Annotated[str | None, Field(description="Ready when this exits 0.")] = None,
        ready_timeout_seconds: Annotated[
            float, Field(description="Seconds to wait for ready.", gt=0, le=3600)
        ] = 60,
        env: Annotated[dict[str, str] | None, Field(description="Its env.")] = None,
        cwd: Annotated[str | None, Field(description="Default /workspace.")] = None,
    ) -> ServiceBrief:
        """Start a long-running process (dev server, database) and wait until it is ready."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
        return ServiceBrief.of(
            await self._call(
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
        )

    @tool(READ_ONLY, title="List task services", profiles={"workspace": 32, "full": 45})
    async def task_service_list(self, task_id: TaskId) -> ServiceList:
        """The task's services with their state and pid."""
        services = await self._call(lambda t: self.sdk.list_task_services(task_id))
        return ServiceList(services=services)

    @tool(READ_ONLY, title="Task service status", profiles={"workspace": 33, "full": 46})
    async def task_service_status(self, task_id: TaskId, name: ServiceName) -> ServiceInfo:
        """State, pid, exit code and readiness check of one service."""
        return await self._call(lambda t: self.sdk.status_task_service(task_id, name))

    @tool(READ_ONLY, title="Task service log", profiles={"workspace": 34, "full": 47})
    async def task_service_logs(
        self, task_id: TaskId, name: ServiceName, cursor: Cursor = 0, wait_seconds: Wait = 0
    ) -> Output:
        """A service's stdout and stderr since cursor (pass the returned one next)."""
        return Output.of(
            await self._call(
                lambda t: self.sdk.logs_task_service(task_id, name, cursor, wait_s=wait_seconds)
            )
        )

    @tool(RUNS, title="Restart a task service", profiles={"workspace": 35, "full": 48})
    async def task_service_restart(self, task_id: TaskId, name: ServiceName) -> ServiceBrief:
        """Kill a service and start it again; waits until it is ready."""
        return ServiceBrief.of(
            await self._call(lambda t: self.sdk.restart_task_service(task_id, name))
        )

    @tool(DESTRUCTIVE, title="Stop a task service", profiles={"workspace": 36, "full": 49})
    async def task_service_stop(self, task_id: TaskId, name: ServiceName) -> ServiceBrief:
        """Stop a service (TERM, KILL after 10 s); its log stays."""
        return ServiceBrief.of(
            await self._call(lambda t: self.sdk.stop_task_service(task_id, name))
        )
