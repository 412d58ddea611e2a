"""The VM half of the :class:`pyro.Pyro` facade: create, start, exec, stop, delete, inspect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.machines.exec import ExecOutput, Stdin, argv_of
from pyro.machines.info import VMInfo, VMLogs

if TYPE_CHECKING:
    from pyro.host.confine import Root
    from pyro.machines.registry import VMRegistry

__all__ = ["ExecOutput", "VMInfo", "VMLogs", "VMMethods", "argv_of"]


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
        from pyro.machines.create import create, resolve

        if self._root is not None:
            environment = self._root.environment(environment)
        shape = resolve(environment, backend=backend, vcpus=vcpus, memory_mib=memory_mib)
        record = create(
            self.registry,
            shape,
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
        check: bool = False,
        stdin: Stdin | None = None,
    ) -> ExecOutput:
        """Run one command in the VM, then delete the VM — always, also when the command
        fails or times out. Starts the VM first if it was only created. ``stdin`` (str,
        bytes or a binary file, read in chunks) is the command's input; default ``/dev/null``.

        Raises:
            NotFoundError: no such VM.
            CommandFailedError: ``check``, and the command failed or timed out (the VM
                is deleted all the same; the error carries the ExecOutput).
        """
        from pyro.machines.exec import exec_once

        output = exec_once(
            self.registry,
            vm_id,
            command,
            timeout_seconds=timeout_seconds,
            env=env,
            cwd=cwd,
            stdin=stdin,
        )
        if check:
            output.check_returncode()
        return output

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
        from pyro.machines.info import read_logs

        return read_logs(self.registry, vm_id, tail=tail)

    def list_vms(self) -> list[VMInfo]:
        """Every VM (not task) the registry knows, oldest first."""
        return [VMInfo.of(r) for r in self.registry.list(kind="vm")]
