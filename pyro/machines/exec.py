"""Run a command in a VM: the one way pyro turns a command into an agent exec and its end
into an exit code.

``pyro run`` (each exec step of a plan), ``pyro vm exec`` and ``pyro task exec`` all go
through :func:`run_command`: a shell string runs with ``sh -c``, a list is the argv itself;
each stream keeps at most :data:`OUTPUT_CAP` bytes by default (the rest is counted and flagged
truncated); a command killed at its timeout exits :data:`TIMEOUT_EXIT_CODE`, one killed by
a signal ``128 + signal``, as a shell reports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, BinaryIO

from pydantic import BaseModel

from pyro.errors import CommandFailedError, StateError, UsageError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient, ExecResult
    from pyro.machines.registry import VMRegistry

#: Exit code of a command (or run) killed at its timeout, like coreutils' timeout(1).
TIMEOUT_EXIT_CODE = 124
#: What a command's result keeps of each stream (the rest is counted, flagged, dropped).
OUTPUT_CAP = 1 << 20

ChunkSink = Callable[[bytes], None]
#: A command's stdin as callers give it: text (sent as UTF-8), bytes, or a binary file
#: (read in chunks while the command runs, never whole; :mod:`pyro.guest.stdin`).
Stdin = str | bytes | bytearray | memoryview | BinaryIO


def stdin_source(stdin: Stdin | None) -> bytes | bytearray | memoryview | BinaryIO | None:
    """``stdin`` as the agent client takes it (text encoded as UTF-8).

    Raises:
        UsageError: ``stdin`` is neither text, bytes nor a readable binary file.
    """
    if stdin is None or isinstance(stdin, (bytes, bytearray, memoryview)):
        return stdin
    if isinstance(stdin, str):
        return stdin.encode("utf-8")
    if not callable(getattr(stdin, "read", None)):
        raise UsageError(
            f"stdin is a {type(stdin).__name__}; it must be str, bytes or a binary file",
            "pass bytes, a str, or a file opened with 'rb'",
        )
    return stdin


class ExecOutput(BaseModel):
    """The result of one command in a VM (``exec_vm``, ``exec_task``)."""

    vm_id: str
    exit_code: int
    timed_out: bool
    signal: int | None = None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int
    deleted: bool = False

    def check_returncode(self) -> None:
        """Raise if the command failed, as :meth:`subprocess.CompletedProcess.check_returncode`.

        Raises:
            CommandFailedError: the exit code is not 0 (124: it timed out); it carries
                this output.
        """
        if self.exit_code == 0 and not self.timed_out:
            return
        what = "timed out" if self.timed_out else f"exited {self.exit_code}"
        raise CommandFailedError(f"the command in vm {self.vm_id} {what}", self)


def argv_of(command: str | Sequence[str]) -> list[str]:
    """A shell string runs with ``sh -c``; a list is the argv itself.

    Raises:
        UsageError: the list is empty.
    """
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    if not command:
        raise UsageError("the command is empty", "give a command after '--', e.g. -- uname -a")
    return list(command)


def exit_code_of(result: ExecResult) -> int:
    """The exit code a shell would report: the command's own, ``128 + signal`` when a
    signal killed it, :data:`TIMEOUT_EXIT_CODE` when pyro killed it at its timeout."""
    if result.timed_out:
        return TIMEOUT_EXIT_CODE
    return result.exit_code if result.exit_code is not None else 128 + (result.signal or 0)


def run_command(
    client: AgentClient,
    vm_id: str,
    command: str | Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout_cap: int = OUTPUT_CAP,
    stderr_cap: int = OUTPUT_CAP,
    on_stdout: ChunkSink | None = None,
    on_stderr: ChunkSink | None = None,
    sync: bool = False,
    stdin: Stdin | None = None,
) -> ExecOutput:
    """Run ``command`` through ``client`` (the agent of VM ``vm_id``) and say how it ended.

    ``on_stdout``/``on_stderr`` see each chunk kept, while it arrives. ``sync``: the command's
    writes are on the guest's disk when this returns (for disks that outlive the VM).
    ``stdin``: streamed to the command while it runs; None: the command reads ``/dev/null``.

    Raises:
        UsageError: the command is empty, or ``stdin`` is of no usable kind.
        StdinReadError: ``stdin`` could not be read (the command was cancelled).
        GuestError, RunTimeoutError: the agent refused the command, the connection broke,
            or the agent never reported the command's end.
        OSError: the socket failed under the agent client (callers name the VM or task).
    """
    argv = argv_of(command)
    source = stdin_source(stdin)
    begun = time.monotonic()
    result = client.exec(
        argv,
        stdin=source,
        env=dict(env or {}),
        cwd=cwd,
        timeout_s=timeout_s,
        stdout_cap=stdout_cap,
        stderr_cap=stderr_cap,
        on_stdout=on_stdout,
        on_stderr=on_stderr,
        sync=sync,
    )
    return ExecOutput(
        vm_id=vm_id,
        exit_code=exit_code_of(result),
        timed_out=result.timed_out,
        signal=result.signal,
        stdout=result.stdout.decode("utf-8", "replace"),
        stderr=result.stderr.decode("utf-8", "replace"),
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        duration_ms=int((time.monotonic() - begun) * 1000),
    )


def exec_once(
    registry: VMRegistry,
    vm_id: str,
    command: str | Sequence[str],
    *,
    timeout_seconds: int,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: Stdin | None = None,
) -> ExecOutput:
    """Run one command in the VM, then delete the VM — always, also when the command
    fails or times out. Starts the VM first if it is not running.

    Raises:
        NotFoundError: no such VM.  BootError: it did not come up.
        StateError, GuestError: the VM broke during the command.
    """
    try:
        record = registry.get(vm_id)
        if record.state != "running":
            _, client = registry.start(vm_id)
        else:
            client = registry.connect(vm_id)
        with client:
            try:
                output = run_command(
                    client,
                    vm_id,
                    command,
                    timeout_s=float(timeout_seconds),
                    env=env,
                    cwd=cwd,
                    stdin=stdin,
                )
            except OSError as exc:
                raise StateError(f"lost the connection to VM {vm_id}: {exc}") from exc
    finally:
        deleted = registry.delete(vm_id)
    return output.model_copy(update={"deleted": deleted})
