"""The VM half of the :class:`pyro.Pyro` facade: create, start, exec, stop, delete, inspect."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pyro.errors import PyroError, StateError

if TYPE_CHECKING:
    from pyro.host.confine import Root
    from pyro.machines.registry import VMRecord, VMRegistry


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


class VMInfo(BaseModel):
    """What ``status_vm``/``list_vms`` report about a VM."""

    id: str
    kind: str
    name: str | None
    labels: dict[str, str]
    environment: str
    environment_digest: str
    backend: str
    vcpus: int
    memory_mib: int
    state: str
    reason: str
    created_at: float
    started_at: float | None
    ttl_seconds: int | None
    ephemeral: bool
    pid: int | None
    uptime_s: float | None
    network: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: VMRecord) -> VMInfo:
        data = record.public()
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


class VMLogs(BaseModel):
    vm_id: str
    serial: str


def argv_of(command: str | Sequence[str]) -> list[str]:
    """A shell string runs with ``sh -c``; a list is the argv itself."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    if not command:
        from pyro.errors import UsageError

        raise UsageError("the command is empty", "give a command after '--', e.g. -- uname -a")
    return list(command)


class VMMethods:
    """VM lifecycle methods of :class:`pyro.Pyro`."""

    _state_dir: Path | None
    _root: Root | None = None  # confined by Pyro(confine_to=); None: the caller is trusted

    @property
    def registry(self) -> VMRegistry:
        from pyro.machines.registry import VMRegistry

        registry = VMRegistry(self._state_dir)
        registry.reap()
        return registry

    def create_vm(
        self,
        environment: str,
        *,
        vcpus: int | None = None,
        memory_mib: int | None = None,
        ttl_seconds: int | None = None,
        backend: str | None = None,
        name: str | None = None,
        kind: str = "vm",
        labels: Mapping[str, str] | None = None,
    ) -> VMInfo:
        """Record a VM of ``environment`` (pulled or built if needed); it is not started.

        Raises:
            EnvironmentNotFoundError: unknown environment.
            BackendUnavailableError: no backend can run a guest here.
            LimitError: resources above the host's.
            OutsideRootError: confined, and ``environment`` is a spec path outside the root.
        """
        from pyro.environments import service
        from pyro.guest.build import build_agent_initrd
        from pyro.vmm import select_backend

        if self._root is not None:
            environment = self._root.environment(environment)
        install = service.pull(environment)
        chosen = select_backend(backend)
        vcpus = vcpus or install.default_vcpus
        memory_mib = memory_mib or install.default_memory_mib
        record = self.registry.create(
            environment=install.name,
            environment_digest=install.digest,
            kernel=install.kernel,
            initrd=build_agent_initrd(),
            rootfs=install.rootfs,
            backend=chosen.name,
            vcpus=vcpus,
            memory_mib=memory_mib,
            ttl_seconds=ttl_seconds,
            name=name,
            kind=kind,  # type: ignore[arg-type]
            labels=dict(labels or {}),
        )
        return VMInfo.of(record)

    def start_vm(self, vm_id: str) -> VMInfo:
        """Boot a created (or stopped) VM and wait until its agent answers.

        Raises:
            NotFoundError: no such VM.  BootError: it did not come up.
        """
        record, client = self.registry.start(vm_id)
        client.close()
        return VMInfo.of(record)

    def exec_vm(
        self,
        vm_id: str,
        command: str | Sequence[str],
        *,
        timeout_seconds: int = 600,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecOutput:
        """Run one command in the VM, then delete the VM — always, also when the command
        fails or times out. Starts the VM first if it was only created.

        Raises:
            NotFoundError: no such VM.
        """
        registry = self.registry
        try:
            record = registry.get(vm_id)
            if record.state != "running":
                _, client = registry.start(vm_id)
            else:
                client = registry.connect(vm_id)
            with client:
                return run_command(
                    client, vm_id, command, timeout_seconds=timeout_seconds, env=env, cwd=cwd
                )
        finally:
            registry.delete(vm_id)

    def stop_vm(self, vm_id: str) -> VMInfo:
        """Shut the guest down; its disk is kept so ``start_vm`` can boot it again."""
        return VMInfo.of(self.registry.stop(vm_id))

    def delete_vm(self, vm_id: str) -> bool:
        """Kill the VM if running and remove its disk and records. False if it did not exist."""
        return self.registry.delete(vm_id)

    def status_vm(self, vm_id: str) -> VMInfo:
        """State, resources, backend and uptime of a VM.

        Raises:
            NotFoundError: no such VM.
        """
        return VMInfo.of(self.registry.get(vm_id))

    def logs_vm(self, vm_id: str, *, tail: int | None = None) -> VMLogs:
        """The guest's serial console log (the last ``tail`` lines, or all of it)."""
        registry = self.registry
        registry.get(vm_id)
        path = registry.serial_log_path(vm_id)
        try:
            text = path.read_bytes().decode("utf-8", "replace").replace("\r", "")
        except FileNotFoundError:
            text = ""
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:])
        return VMLogs(vm_id=vm_id, serial=text)

    def list_vms(self) -> list[VMInfo]:
        """Every VM (not task) the registry knows, oldest first."""
        return [VMInfo.of(r) for r in self.registry.list(kind="vm")]


def run_command(
    client: Any,
    vm_id: str,
    command: str | Sequence[str],
    *,
    timeout_seconds: int,
    env: Mapping[str, str] | None,
    cwd: str | None,
    on_stdout: Any = None,
    on_stderr: Any = None,
) -> ExecOutput:
    """One exec through an agent client, as an :class:`ExecOutput` (124 on timeout)."""
    from pyro.execute.apply import STDERR_CAP, STDOUT_CAP
    from pyro.execute.result import TIMEOUT_EXIT_CODE

    begun = time.monotonic()
    try:
        result = client.exec(
            argv_of(command),
            env=dict(env or {}),
            cwd=cwd,
            timeout_s=float(timeout_seconds),
            stdout_cap=STDOUT_CAP,
            stderr_cap=STDERR_CAP,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )
    except PyroError:
        raise
    except OSError as exc:
        raise StateError(f"lost the connection to VM {vm_id}: {exc}") from exc
    if result.timed_out:
        code = TIMEOUT_EXIT_CODE
    else:
        code = result.exit_code if result.exit_code is not None else 128 + (result.signal or 0)
    return ExecOutput(
        vm_id=vm_id,
        exit_code=code,
        timed_out=result.timed_out,
        signal=result.signal,
        stdout=result.stdout.decode("utf-8", "replace"),
        stderr=result.stderr.decode("utf-8", "replace"),
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        duration_ms=int((time.monotonic() - begun) * 1000),
    )
