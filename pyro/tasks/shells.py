"""Interactive shells in a task: login shells on a pseudo-terminal in the guest, kept by the
agent across CLI calls until closed (or the task stops). Output is read with a cursor, so a
program (or a re-attached terminal) sees everything the shell printed meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from pyro.errors import GuestError, NotFoundError
from pyro.guest.procs import ProcState, check_signal, check_size
from pyro.machines.registry import VMState
from pyro.tasks.manager import TaskManager
from pyro.tasks.procs import (
    PREFIX,
    ProcessOutput,
    agent_name,
    check_name,
    output,
    running_session,
    translate,
)

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

#: bash when the image has it, else sh; a login shell in the workspace.
DEFAULT_SHELL = ["/bin/sh", "-c", "command -v bash >/dev/null && exec bash -l; exec sh -l"]


class ShellInfo(BaseModel):
    """One shell of a task."""

    task_id: str
    name: str = Field(description="The shell's name (pass it to the other shell calls).")
    pid: int = Field(description="The shell's pid in the guest.")
    running: bool = Field(description="It still runs.")
    exit_code: int | None = Field(default=None, description="Its exit code once ended.")
    signal: int | None = None
    output_bytes: int = Field(description="Bytes printed so far (the cursor of the newest).")


def _failing(task_id: str, name: str, exc: GuestError) -> Exception:
    return translate(exc, task_id, "shell", name)


def open_shell(
    manager: TaskManager,
    task_id: str,
    name: str | None = None,
    *,
    rows: int = 24,
    cols: int = 80,
    command: Sequence[str] | None = None,
) -> ShellInfo:
    """Start a shell (default: the first free name of ``1``, ``2``, …) in the workspace.

    Boots a stopped task, like an exec does.

    Raises:
        UsageError: bad name or window size.  StateError: the name is taken, or too many
            shells and services run.  NotFoundError: no such task.
    """
    check_size(rows, cols)
    if name is not None:
        check_name("shell", name)
    _, meta = manager.get(task_id)
    with manager.session(task_id) as client:
        if name is None:
            taken = {p.name for p in client.proc_list()}
            name = next(str(i) for i in range(1, 100) if PREFIX["shell"] + str(i) not in taken)
        try:
            client.spawn(
                agent_name("shell", name),
                list(command or DEFAULT_SHELL),
                cwd=meta.workspace,
                pty=True,
                rows=rows,
                cols=cols,
            )
            states = client.proc_list()
        except GuestError as exc:
            raise _failing(task_id, name, exc) from exc
    manager.touch(task_id)
    return _info(task_id, name, states)


def _info(task_id: str, name: str, states: list[ProcState]) -> ShellInfo:
    for state in states:
        if state.name == agent_name("shell", name):
            return ShellInfo(
                task_id=task_id,
                name=name,
                pid=state.pid,
                running=state.running,
                exit_code=state.exit_code,
                signal=state.signal,
                output_bytes=state.end,
            )
    raise NotFoundError(
        f"task {task_id} has no shell named {name!r}",
        f"open one with 'pyro task shell {task_id} --name {name}'",
    )


def list_shells(manager: TaskManager, task_id: str) -> list[ShellInfo]:
    """The task's shells (open or ended, until closed); none when the task is stopped.

    Raises:
        NotFoundError: no such task.
    """
    record, _ = manager.get(task_id)
    if record.state is not VMState.RUNNING:
        return []
    with running_session(manager, task_id, "shell") as client:
        states = client.proc_list()
    prefix = PREFIX["shell"]
    names = [s.name[len(prefix) :] for s in states if s.name.startswith(prefix)]
    return [_info(task_id, n, states) for n in names]


def write_shell(manager: TaskManager, task_id: str, name: str, data: bytes | str) -> None:
    """Type into a shell (``\\n`` runs a line, ``\\x03`` is Ctrl-C).

    Raises:
        NotFoundError: no such task or shell.  StateError: stopped task, ended shell.
    """
    raw = data.encode() if isinstance(data, str) else data
    with running_session(manager, task_id, "shell") as client:
        try:
            client.proc_write(agent_name("shell", name), raw)
        except GuestError as exc:
            raise _failing(task_id, name, exc) from exc


def read_shell(
    manager: TaskManager,
    task_id: str,
    name: str,
    cursor: int = 0,
    *,
    wait_s: float = 0.0,
    max_bytes: int = 512 * 1024,
) -> ProcessOutput:
    """What the shell printed from ``cursor`` on (waiting up to ``wait_s`` for something new).

    Raises:
        NotFoundError: no such task or shell.  StateError: the task is stopped.
        UsageError: cursor, wait or size out of range.
    """
    with running_session(manager, task_id, "shell") as client:
        try:
            got = client.proc_read(
                agent_name("shell", name), cursor, max_bytes=max_bytes, wait_s=wait_s
            )
        except GuestError as exc:
            raise _failing(task_id, name, exc) from exc
    return output(task_id, name, got)


def resize_shell(manager: TaskManager, task_id: str, name: str, rows: int, cols: int) -> None:
    """Set the shell's window size (its programs get SIGWINCH).

    Raises:
        UsageError: size out of range.  NotFoundError, StateError.
    """
    check_size(rows, cols)
    with running_session(manager, task_id, "shell") as client:
        try:
            client.proc_resize(agent_name("shell", name), rows, cols)
        except GuestError as exc:
            raise _failing(task_id, name, exc) from exc


def signal_shell(manager: TaskManager, task_id: str, name: str, sig: int | str = "INT") -> None:
    """Signal the program in the shell's foreground (INT: like Ctrl-C).

    Raises:
        UsageError: unknown signal.  NotFoundError, StateError (also: the shell ended).
    """
    number = check_signal(sig)
    with running_session(manager, task_id, "shell") as client:
        try:
            client.proc_signal(agent_name("shell", name), number)
        except GuestError as exc:
            raise _failing(task_id, name, exc) from exc


def close_shell(manager: TaskManager, task_id: str, name: str) -> None:
    """End the shell and everything it started (SIGKILL to its session), forget its output.

    Raises:
        NotFoundError: no such task or shell.  StateError: the task is stopped.
    """
    with running_session(manager, task_id, "shell") as client:
        try:
            client.proc_remove(agent_name("shell", name))
        except GuestError as exc:
            raise _failing(task_id, name, exc) from exc


class ShellChannel:
    """One shell over one held agent session: what an attached terminal uses (its reads and
    writes must not each pay for a new connection)."""

    def __init__(self, client: AgentClient, task_id: str, name: str) -> None:
        self._client = client
        self._full = agent_name("shell", name)
        self.task_id = task_id
        self.name = name

    def write(self, data: bytes) -> None:
        """Raises: StateError: the shell ended.  NotFoundError: it was closed."""
        try:
            self._client.proc_write(self._full, data)
        except GuestError as exc:
            raise _failing(self.task_id, self.name, exc) from exc

    def read(self, cursor: int, wait_s: float) -> ProcessOutput:
        """Raises: NotFoundError: the shell was closed meanwhile."""
        try:
            got = self._client.proc_read(self._full, cursor, wait_s=wait_s)
        except GuestError as exc:
            raise _failing(self.task_id, self.name, exc) from exc
        return output(self.task_id, self.name, got)

    def resize(self, rows: int, cols: int) -> None:
        with contextlib.suppress(GuestError):  # a shell that just ended has no window
            self._client.proc_resize(self._full, rows, cols)

    def end(self) -> int:
        """The offset just past its newest output."""
        for state in self._client.proc_list():
            if state.name == self._full:
                return state.end
        return 0


@contextlib.contextmanager
def attached(manager: TaskManager, task_id: str, name: str) -> Iterator[ShellChannel]:
    """A channel to an existing shell, holding the task's session while attached.

    Raises:
        NotFoundError: no such task or shell.  StateError: the task is stopped.
    """
    with running_session(manager, task_id, "shell") as client:
        channel = ShellChannel(client, task_id, name)
        if not any(s.name == channel._full for s in client.proc_list()):
            raise NotFoundError(
                f"task {task_id} has no shell named {name!r}",
                f"open one with 'pyro task shell {task_id} --name {name}'",
            )
        yield channel
