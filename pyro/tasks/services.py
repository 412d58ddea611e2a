"""Named long-running processes in a task (a dev server, a database): started with an optional
readiness check, kept by the guest agent across CLI calls, with their own log (stdout and
stderr merged), status, restart and stop.

Definitions (argv, env, cwd, readiness; :mod:`pyro.tasks.service_specs`) are stored with the
task, so
``restart`` works also after the task was stopped and started (the processes themselves end
with the VM).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from pyro.errors import GuestError, NotFoundError, RunTimeoutError, StateError, UsageError
from pyro.guest.client import AgentClient
from pyro.guest.procs import HTTP_PATH_RE, ProcState
from pyro.machines.registry import VMState
from pyro.tasks.files import guest_path
from pyro.tasks.procs import (
    PREFIX,
    ProcessOutput,
    agent_name,
    check_name,
    output,
    running_session,
    translate,
)
from pyro.tasks.service_specs import (
    Readiness,
    ServiceSpec,
    check_room,
    load_specs,
    save_spec,
)

if TYPE_CHECKING:
    from pyro.tasks.manager import TaskManager

#: How much of a log an error shows when a service failed to come up.
TAIL_LINES = 20
#: The longest readiness command (it is stored with the task and run every 0.25 s).
READY_COMMAND_MAX = 4096
STOP_GRACE_S = 10.0


class ServiceInfo(BaseModel):
    """A service as ``service list``/``status`` report it."""

    task_id: str
    name: str = Field(description="The service's name.")
    argv: list[str] = Field(description="Its command.")
    cwd: str = Field(description="Its directory.")
    state: str = Field(description="running, exited, stopped, paused or not running.")
    pid: int | None = Field(default=None, description="Its pid in the guest.")
    exit_code: int | None = Field(default=None, description="Its exit code once ended.")
    signal: int | None = None
    readiness: str | None = Field(default=None, description="Ready check.")
    started_at: float | None = Field(default=None, description="Last start, Unix time.")
    restarts: int = Field(default=0, description="Times restarted.")
    log_bytes: int = Field(default=0, description="Bytes logged.")


def load(manager: TaskManager, task_id: str) -> dict[str, ServiceSpec]:
    """The stored definitions by name.

    Raises:
        StateError: the file is unreadable.
    """
    return load_specs(manager.dir(task_id), task_id)


def _save(manager: TaskManager, task_id: str, spec: ServiceSpec) -> None:
    with manager.locked(task_id):
        save_spec(manager.dir(task_id), task_id, spec)


def _spec(manager: TaskManager, task_id: str, name: str) -> ServiceSpec:
    check_name("service", name)
    spec = load(manager, task_id).get(name)
    if spec is None:
        raise NotFoundError(
            f"task {task_id} has no service named {name!r}",
            f"'pyro task service list {task_id}' lists them; start one with "
            f"'pyro task service start {task_id} {name} -- CMD'",
        )
    return spec


def check_readiness(readiness: Readiness | None) -> None:
    """Raises: UsageError: an inconsistent or out-of-range check."""
    if readiness is None:
        return
    kinds = (
        (readiness.port is not None and readiness.http_path is None)
        + (readiness.http_path is not None)
        + (readiness.command is not None)
    )
    if kinds != 1:
        raise UsageError(
            "give one readiness check: a port, an HTTP path (with its port) or a command",
            "e.g. --ready-port 8000, --ready-port 8000 --ready-http /health, or --ready-cmd CMD",
        )
    if readiness.http_path is not None and readiness.port is None:
        raise UsageError(
            "an HTTP readiness check needs the port to GET from", "add --ready-port PORT"
        )
    if readiness.port is not None and not 1 <= readiness.port <= 65535:
        raise UsageError(f"readiness port {readiness.port} is out of range", "give 1-65535")
    if readiness.http_path is not None and not HTTP_PATH_RE.fullmatch(readiness.http_path):
        raise UsageError(
            f"bad readiness HTTP path {readiness.http_path[:80]!r}",
            "give a path starting with / of at most 1024 ASCII characters without spaces "
            "(percent-encode others), like /health",
        )
    if readiness.command is not None and (
        not readiness.command.strip()
        or len(readiness.command.encode("utf-8", "surrogatepass")) > READY_COMMAND_MAX
        or "\0" in readiness.command
    ):
        raise UsageError(
            f"bad readiness command {readiness.command[:80]!r}",
            f"give a shell command line of 1-{READY_COMMAND_MAX} bytes without NUL bytes",
        )
    if not 0 < readiness.timeout_seconds <= 3600:
        raise UsageError(
            f"readiness timeout {readiness.timeout_seconds:g} s is out of range",
            "give 1-3600 seconds",
        )


def _info(
    task_id: str, spec: ServiceSpec, state: ProcState | None, *, paused: bool = False
) -> ServiceInfo:
    if state is None and paused and not spec.stopped:
        shown = "paused"  # in the task's saved memory; it goes on at resume
    elif state is None:
        shown = "stopped" if spec.stopped else "not running"
    elif state.running:
        shown = "running"
    else:
        shown = "stopped" if spec.stopped else "exited"
    return ServiceInfo(
        task_id=task_id,
        name=spec.name,
        argv=spec.argv,
        cwd=spec.cwd,
        state=shown,
        pid=state.pid if state else None,
        exit_code=state.exit_code if state else None,
        signal=state.signal if state else None,
        readiness=spec.readiness.describe() if spec.readiness else None,
        started_at=spec.started_at,
        restarts=spec.restarts,
        log_bytes=state.end if state else 0,
    )


def _states(client: AgentClient) -> dict[str, ProcState]:
    prefix = PREFIX["service"]
    return {s.name[len(prefix) :]: s for s in client.proc_list() if s.name.startswith(prefix)}


def log_tail(client: AgentClient, name: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a service's log ('' when there is none)."""
    with contextlib.suppress(GuestError):
        state = _states(client).get(name)
        if state is not None:
            got = client.proc_read(agent_name("service", name), max(0, state.end - 8192))
            text = got.data.decode("utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
    return ""


def _launch(manager: TaskManager, client: AgentClient, task_id: str, spec: ServiceSpec) -> None:
    """(Re)start the process of ``spec`` and wait for it to be ready."""
    full = agent_name("service", spec.name)
    try:
        if spec.name in _states(client):
            client.proc_remove(full)
        client.spawn(full, spec.argv, env=spec.env, cwd=spec.cwd)
    except GuestError as exc:
        raise translate(exc, task_id, "service", spec.name) from exc
    _save(manager, task_id, spec.model_copy(update={"started_at": time.time(), "stopped": False}))
    if spec.readiness is not None:
        _wait_ready(client, task_id, spec.name, spec.readiness, spec.cwd)


def _wait_ready(client: AgentClient, task_id: str, name: str, ready: Readiness, cwd: str) -> None:
    """Raises: StateError: it ended first.  RunTimeoutError: not ready in time (it runs on)."""
    deadline = time.monotonic() + ready.timeout_seconds
    logs = f"'pyro task service logs {task_id} {name}'"
    while True:
        state = _states(client).get(name)
        if state is None or not state.running:
            code = "" if state is None else f" ({_ended(state)})"
            raise StateError(
                f"service {name!r} of task {task_id} ended before it was ready{code}; "
                f"its last log lines:\n{log_tail(client, name)}",
                f"fix its command and run 'pyro task service restart {task_id} {name}'",
            )
        if _probe(client, ready, deadline - time.monotonic(), cwd):
            return
        if time.monotonic() >= deadline:
            raise RunTimeoutError(
                f"service {name!r} of task {task_id} was not ready within "
                f"{ready.timeout_seconds:g} s ({ready.describe()}); its last log lines:\n"
                f"{log_tail(client, name)}",
                f"it still runs: see {logs}, or stop it with "
                f"'pyro task service stop {task_id} {name}'",
            )
        time.sleep(0.25)


def _ended(state: ProcState) -> str:
    if state.signal is not None:
        return f"killed by signal {state.signal}"
    return f"exit code {state.exit_code}"


def _probe(client: AgentClient, ready: Readiness, left_s: float, cwd: str) -> bool:
    """One readiness check, bounded by the time left (a command at most 10 s)."""
    try:
        if ready.command is not None:
            argv = ["/bin/sh", "-c", ready.command]
            limit = max(1.0, min(10.0, left_s))
            return client.exec(argv, cwd=cwd, timeout_s=limit).exit_code == 0
        assert ready.port is not None
        status = client.probe(ready.port, ready.http_path, timeout_s=max(0.1, min(left_s, 2.0)))
        return ready.http_path is None or status < 400
    except GuestError:
        return False


def start_service(
    manager: TaskManager,
    task_id: str,
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    readiness: Readiness | None = None,
) -> ServiceInfo:
    """Start a service (booting a stopped task) and wait until it is ready.

    Starting the name of a service that has ended replaces its definition.

    Raises:
        UsageError: bad name, command or readiness check, or a new name past the
            definitions a task keeps (``MAX_SERVICES``).  NotFoundError: no such task.
        StateError: a service of that name runs, or it ended before it was ready.
        RunTimeoutError: not ready in time (it keeps running; the error shows its log).
    """
    check_name("service", name)
    if not command:
        raise UsageError("a service needs a command", "give it after --, e.g. -- python3 app.py")
    check_readiness(readiness)
    _, meta = manager.get(task_id)
    check_room(load(manager, task_id), name, task_id)  # before anything starts in the guest
    spec = ServiceSpec(
        name=name,
        argv=list(command),
        env=dict(env or {}),
        cwd=guest_path(cwd, meta.workspace) if cwd else meta.workspace,
        readiness=readiness,
        created_at=time.time(),
    )
    with manager.session(task_id) as client:
        state = _states(client).get(name)
        if state is not None and state.running:
            raise StateError(
                f"task {task_id} already runs a service named {name!r} (pid {state.pid})",
                f"restart it with 'pyro task service restart {task_id} {name}', or stop it",
            )
        _launch(manager, client, task_id, spec)
        states = _states(client)
    manager.touch(task_id)
    return _info(task_id, _spec(manager, task_id, name), states.get(name))


def restart_service(manager: TaskManager, task_id: str, name: str) -> ServiceInfo:
    """Stop the service's process group (SIGKILL) if it runs and start its definition again
    (booting a stopped task), then wait for it to be ready.

    Raises:
        NotFoundError: no such task or service.  StateError, RunTimeoutError: as start.
    """
    spec = _spec(manager, task_id, name)
    spec = spec.model_copy(update={"restarts": spec.restarts + 1})
    with manager.session(task_id) as client:
        _launch(manager, client, task_id, spec)
        states = _states(client)
    manager.touch(task_id)
    return _info(task_id, _spec(manager, task_id, name), states.get(name))


def stop_service(
    manager: TaskManager, task_id: str, name: str, *, grace_s: float = STOP_GRACE_S
) -> ServiceInfo:
    """SIGTERM to the service's process group, SIGKILL after ``grace_s``; its log and
    definition stay (``restart`` starts it again).

    Raises:
        NotFoundError: no such task or service.
    """
    spec = _spec(manager, task_id, name)
    _save(manager, task_id, spec.model_copy(update={"stopped": True}))
    record, meta = manager.get(task_id)
    if record.state is not VMState.RUNNING and meta.paused is None:
        return status_service(manager, task_id, name)  # a paused task is resumed to stop it
    full = agent_name("service", name)
    with manager.session(task_id) as client:
        state = _states(client).get(name)
        if state is not None and state.running:
            with contextlib.suppress(GuestError):  # it may end on its own meanwhile
                client.proc_signal(full, 15)
                if not _wait_exit(client, full, grace_s):
                    client.proc_signal(full, 9)
                    _wait_exit(client, full, 10.0)
    return status_service(manager, task_id, name)


def _wait_exit(client: AgentClient, full: str, seconds: float) -> bool:
    """Whether the process ended within ``seconds`` (long polls on its output)."""
    end = time.monotonic() + seconds
    cursor = 0
    while time.monotonic() < end:
        got = client.proc_read(full, cursor, max_bytes=1, wait_s=0.5)
        if not got.state.running:
            return True
        cursor = got.state.end  # wait for what comes next, not for what is there
    return False


def list_services(manager: TaskManager, task_id: str) -> list[ServiceInfo]:
    """Every service defined in the task, by name, with its live state.

    Raises:
        NotFoundError: no such task.
    """
    record, meta = manager.get(task_id)
    specs = load(manager, task_id)
    states: dict[str, ProcState] = {}
    if specs and record.state is VMState.RUNNING:
        with running_session(manager, task_id, "service") as client:
            states = _states(client)
    paused = meta.paused is not None
    return [_info(task_id, specs[n], states.get(n), paused=paused) for n in sorted(specs)]


def status_service(manager: TaskManager, task_id: str, name: str) -> ServiceInfo:
    """Raises: NotFoundError: no such task or service."""
    spec = _spec(manager, task_id, name)
    record, meta = manager.get(task_id)
    state = None
    if record.state is VMState.RUNNING:
        with running_session(manager, task_id, "service") as client:
            state = _states(client).get(name)
    return _info(task_id, spec, state, paused=meta.paused is not None)


def service_logs(
    manager: TaskManager,
    task_id: str,
    name: str,
    cursor: int = 0,
    *,
    wait_s: float = 0.0,
    max_bytes: int = 512 * 1024,
) -> ProcessOutput:
    """The service's log (stdout and stderr as written) from ``cursor``; the agent keeps the
    last 1 MiB, ``missed`` says how much before that is gone.

    Raises:
        NotFoundError: no such task or service.  StateError: its process is gone (the task
            was stopped since it started).
    """
    _spec(manager, task_id, name)
    with running_session(manager, task_id, "service") as client:
        try:
            got = client.proc_read(
                agent_name("service", name), cursor, max_bytes=max_bytes, wait_s=wait_s
            )
        except GuestError as exc:
            error = translate(exc, task_id, "service", name)
            if isinstance(error, NotFoundError):
                raise StateError(
                    f"service {name!r} of task {task_id} has no log: it has not run since the "
                    "task's VM was started again",
                    f"start it with 'pyro task service restart {task_id} {name}'",
                ) from exc
            raise error from exc
    return output(task_id, name, got)
