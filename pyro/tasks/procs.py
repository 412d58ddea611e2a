"""What task shells and services share: their persistent processes in the task's guest agent
(docs/agent-protocol.md, "Persistent processes"), named per kind, and the errors they raise.

A shell ``dev`` is the agent process ``sh.dev``, a service ``web`` is ``svc.web``: the two
kinds never clash, and each lists only its own.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, field_serializer

from pyro.errors import GuestError, NotFoundError, StateError, UsageError
from pyro.guest.client import GuestRequestError
from pyro.machines.registry import VMState

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.guest.procs import ProcOutput
    from pyro.tasks.manager import TaskManager

#: A shell or service name: the agent's process name rules, less room for the kind prefix.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")
PREFIX = {"shell": "sh.", "service": "svc."}


def check_name(kind: str, name: str) -> str:
    """Raises: UsageError: ``name`` is not 1-48 of ``a-z 0-9 . _ -`` (first a letter/digit)."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"bad {kind} name {name[:80]!r}",
            "use 1-48 characters a-z 0-9 . _ -, starting with a letter or digit",
        )
    return name


def agent_name(kind: str, name: str) -> str:
    return PREFIX[kind] + check_name(kind, name)


class ProcessOutput(BaseModel):
    """Output of a shell or a service's log from a cursor, and whether it still runs."""

    task_id: str
    name: str = Field(description="Shell or service name.")
    data: bytes = Field(description="Output since the cursor.")
    cursor: int = Field(description="The cursor for the next read.")
    missed: int = Field(description="Bytes lost before data (1 MiB is kept).")
    running: bool = Field(description="It still runs.")
    exit_code: int | None = Field(default=None, description="Its exit code once ended.")
    signal: int | None = None

    @field_serializer("data", when_used="json")
    def _data_as_text(self, data: bytes) -> str:
        return data.decode("utf-8", errors="replace")

    @property
    def text(self) -> str:
        """``data`` as text (bytes that are not UTF-8 become U+FFFD)."""
        return self.data.decode("utf-8", errors="replace")


def output(task_id: str, name: str, got: ProcOutput) -> ProcessOutput:
    return ProcessOutput(
        task_id=task_id,
        name=name,
        data=got.data,
        cursor=got.cursor,
        missed=got.missed,
        running=got.state.running,
        exit_code=got.state.exit_code,
        signal=got.state.signal,
    )


@contextlib.contextmanager
def running_session(manager: TaskManager, task_id: str, kind: str) -> Iterator[AgentClient]:
    """The task's agent session, without booting a stopped task (its processes are gone);
    a paused task is resumed (they are in its saved memory).

    Raises:
        NotFoundError: no such task.  StateError: it is stopped.
    """
    record, meta = manager.get(task_id)
    if record.state is not VMState.RUNNING and meta.paused is None:
        raise StateError(
            f"task {task_id} is {record.state.value}; its {kind}s ended with its VM",
            f"start it with 'pyro task start {task_id}', then start the {kind} again",
        )
    with manager.session(task_id) as client:
        yield client


def translate(exc: GuestError, task_id: str, kind: str, name: str) -> Exception:
    """A guest refusal as what it means for a named shell or service."""
    err = exc.errno if isinstance(exc, GuestRequestError) else None
    cmd = "pyro task shell" if kind == "shell" else "pyro task service list"
    if err == errno.ENOENT:
        return NotFoundError(
            f"task {task_id} has no {kind} named {name!r}",
            f"'{cmd} {task_id}' lists them"
            if kind == "service"
            else f"open one with '{cmd} {task_id} --name {name}'",
        )
    if err == errno.EEXIST:
        return StateError(
            f"task {task_id} already has a {kind} named {name!r}",
            "choose another name, or stop/close the one there first",
        )
    if err == errno.EAGAIN:
        return StateError(
            f"task {task_id} cannot take another {kind}: {exc.summary}",
            "close shells or stop services you no longer need",
        )
    if err == errno.ENOSYS:
        return StateError(
            f"task {task_id} runs a guest agent without shells and services: {exc.summary}",
            "create a new task; a task keeps the agent it was created with",
        )
    if err in (errno.ESRCH, errno.EPIPE):
        return StateError(f"the {kind} {name!r} of task {task_id} has ended", None)
    return exc
