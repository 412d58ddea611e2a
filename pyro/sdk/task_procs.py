"""The shell and service half of the task facade of :class:`pyro.Pyro`: interactive shells
(PTY) and named long-running services in a task (docs/tasks.md, "Shells" and "Services")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pyro.lazy import lazy_attributes

if TYPE_CHECKING:
    from pyro.tasks.manager import TaskManager
    from pyro.tasks.procs import ProcessOutput
    from pyro.tasks.service_specs import Readiness
    from pyro.tasks.services import ServiceInfo
    from pyro.tasks.shells import ShellInfo

__all__ = ["ProcessOutput", "Readiness", "ServiceInfo", "ShellInfo", "TaskProcessMethods"]

_HOMES = {
    "ProcessOutput": "pyro.tasks.procs",
    "Readiness": "pyro.tasks.service_specs",
    "ServiceInfo": "pyro.tasks.services",
    "ShellInfo": "pyro.tasks.shells",
}

__getattr__ = lazy_attributes(__name__, _HOMES)


class _HasTasks(Protocol):
    @property
    def tasks(self) -> TaskManager: ...


class TaskProcessMethods:
    """Shells and services of a task, methods of :class:`pyro.Pyro`.

    Every method raises :class:`pyro.errors.PyroError` subclasses only: NotFoundError for an
    unknown task, shell or service; StateError for a stopped task (shells and services end
    with its VM), a name in use, or an ended shell; UsageError for bad arguments.
    """

    # -- shells -------------------------------------------------------------------------------

    def open_task_shell(
        self: _HasTasks,
        task_id: str,
        name: str | None = None,
        *,
        rows: int = 24,
        cols: int = 80,
        command: Sequence[str] | None = None,
    ) -> ShellInfo:
        """Open a shell on a pseudo-terminal in ``/workspace`` (bash if the image has it);
        ``name`` defaults to the first free of ``1``, ``2``, … It stays until closed.
        """
        from pyro.tasks.shells import open_shell

        return open_shell(self.tasks, task_id, name, rows=rows, cols=cols, command=command)

    def write_task_shell(self: _HasTasks, task_id: str, name: str, data: str | bytes) -> None:
        """Type into the shell: ``"ls\\n"`` runs ls, ``"\\x03"`` is Ctrl-C."""
        from pyro.tasks.shells import write_shell

        write_shell(self.tasks, task_id, name, data)

    def read_task_shell(
        self: _HasTasks, task_id: str, name: str, cursor: int = 0, *, wait_s: float = 0.0
    ) -> ProcessOutput:
        """What the shell printed from ``cursor`` on; pass the returned ``cursor`` next time
        to lose nothing. ``wait_s`` (≤ 60) waits for new output when there is none yet.
        """
        from pyro.tasks.shells import read_shell

        return read_shell(self.tasks, task_id, name, cursor, wait_s=wait_s)

    def resize_task_shell(self: _HasTasks, task_id: str, name: str, rows: int, cols: int) -> None:
        """Set the shell's window size (1-1000 each); its programs get SIGWINCH."""
        from pyro.tasks.shells import resize_shell

        resize_shell(self.tasks, task_id, name, rows, cols)

    def signal_task_shell(
        self: _HasTasks, task_id: str, name: str, signal: int | str = "INT"
    ) -> None:
        """Signal the shell's foreground program (``INT`` is Ctrl-C, the shell survives)."""
        from pyro.tasks.shells import signal_shell

        signal_shell(self.tasks, task_id, name, signal)

    def close_task_shell(self: _HasTasks, task_id: str, name: str) -> None:
        """End the shell and all it started."""
        from pyro.tasks.shells import close_shell

        close_shell(self.tasks, task_id, name)

    def list_task_shells(self: _HasTasks, task_id: str) -> list[ShellInfo]:
        """The task's shells (none while it is stopped)."""
        from pyro.tasks.shells import list_shells

        return list_shells(self.tasks, task_id)

    # -- services -----------------------------------------------------------------------------

    def start_task_service(
        self: _HasTasks,
        task_id: str,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        ready_port: int | None = None,
        ready_http: str | None = None,
        ready_cmd: str | None = None,
        ready_timeout_s: float = 60.0,
    ) -> ServiceInfo:
        """Start a named long-running process (booting a stopped task) and wait until it is
        ready: ``ready_port`` accepts TCP, ``ready_http`` (a path on ``ready_port``) answers
        < 400, or ``ready_cmd`` exits 0. Its stdout and stderr go to one log.

        Raises:
            RunTimeoutError: not ready in time (it keeps running; the error shows its log).
            StateError: it ended before it was ready, or a service of that name runs.
        """
        from pyro.tasks.service_specs import Readiness
        from pyro.tasks.services import start_service

        readiness = None
        if ready_port is not None or ready_http is not None or ready_cmd is not None:
            readiness = Readiness(
                port=ready_port,
                http_path=ready_http,
                command=ready_cmd,
                timeout_seconds=ready_timeout_s,
            )
        return start_service(
            self.tasks, task_id, name, command, env=env, cwd=cwd, readiness=readiness
        )

    def list_task_services(self: _HasTasks, task_id: str) -> list[ServiceInfo]:
        """Every service defined in the task, with its state."""
        from pyro.tasks.services import list_services

        return list_services(self.tasks, task_id)

    def status_task_service(self: _HasTasks, task_id: str, name: str) -> ServiceInfo:
        """One service's state, pid, exit code, readiness check and restarts."""
        from pyro.tasks.services import status_service

        return status_service(self.tasks, task_id, name)

    def logs_task_service(
        self: _HasTasks, task_id: str, name: str, cursor: int = 0, *, wait_s: float = 0.0
    ) -> ProcessOutput:
        """The service's log from ``cursor`` (the last 1 MiB is kept; ``missed`` counts
        what is gone); pass the returned ``cursor`` to follow it."""
        from pyro.tasks.services import service_logs

        return service_logs(self.tasks, task_id, name, cursor, wait_s=wait_s)

    def restart_task_service(self: _HasTasks, task_id: str, name: str) -> ServiceInfo:
        """Kill the service if it runs and start its definition again (new pid), then wait
        for it to be ready."""
        from pyro.tasks.services import restart_service

        return restart_service(self.tasks, task_id, name)

    def stop_task_service(self: _HasTasks, task_id: str, name: str) -> ServiceInfo:
        """SIGTERM the service (SIGKILL after 10 s); its log and definition stay."""
        from pyro.tasks.services import stop_service

        return stop_service(self.tasks, task_id, name)
