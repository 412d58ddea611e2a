"""A stand-in for :class:`pyro.Pyro` for unit tests of the server's logic (no guests)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyro.errors import NotFoundError
from pyro.execute.result import RunResult, StepResult
from pyro.sdk.vm import ExecOutput, VMInfo

#: Deadlock guard for fakes that wait on each other; a healthy test never gets near it.
GUARD_S = 30.0


def run_result(name: str, stdout: str, vm_id: str = "vm-fake") -> RunResult:
    step = StepResult(
        id="exec-0", action="exec", name="command", status="ok", exit_code=0, stdout=stdout
    )
    return RunResult(
        ok=True,
        name=name,
        plan_digest="sha256:" + "0" * 64,
        environment="debian:12",
        environment_digest="sha256:" + "1" * 64,
        backend="qemu-tcg",
        vm_id=vm_id,
        exit_code=0,
        stdout=stdout,
        duration_ms=1,
        steps=[step],
    )


def vm_info(vm_id: str, state: str = "created") -> VMInfo:
    return VMInfo(
        id=vm_id,
        kind="vm",
        name=None,
        labels={},
        environment="debian:12",
        environment_digest="sha256:" + "1" * 64,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=256,
        state=state,
        reason="",
        created_at=0.0,
        started_at=None,
        ttl_seconds=None,
        ephemeral=False,
        pid=None,
        uptime_s=None,
    )


class FakePyro:
    """Records calls; ``run_in_vm`` can be made to block so tests control timing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.deleted: list[str] = []
        self.vms: dict[str, VMInfo] = {}
        self.run_hook: Callable[[str, Callable[..., None]], None] | None = None
        self.create_hook: Callable[[], None] | None = None
        self.released = threading.Event()
        self.roots: list[Any] = []
        #: What the first step's pull reports to ``on_pull`` (the progress tests set it).
        self.pull_events: list[Any] = []

    # -- what the tools call ---------------------------------------------------------------

    def confined(self, root: Any) -> FakePyro:
        """The real SDK returns a confined view; the fake records the root and is its own."""
        self.roots.append(root)
        return self

    def run_in_vm(
        self,
        environment: str,
        command: str | Sequence[str],
        *,
        on_event: Callable[[str, str, Mapping[str, str]], None] = lambda *args: None,
        on_step: Callable[[int, int, str], None] = lambda *args: None,
        on_pull: Callable[[Any], None] = lambda event: None,
        **kwargs: Any,
    ) -> RunResult:
        self.calls.append(("run_in_vm", {"environment": environment, "command": command, **kwargs}))
        vm_id = f"vm-{len(self.calls)}"
        on_step(1, 3, "boot")
        for event in self.pull_events:
            on_pull(event)
        on_event("run", "create", {"environment": environment})
        on_event("run", "start", {"vm_id": vm_id})
        if self.run_hook is not None:
            self.run_hook(vm_id, on_event)
        on_step(2, 3, "exec.command")
        on_event("run", "execute", {"vm_id": vm_id})
        on_step(3, 3, "cleanup")
        on_event("run", "cleanup", {"vm_id": vm_id})
        return run_result("run", f"ran {command}", vm_id)

    def apply(self, spec: Any, *, vars: Any = None, **sinks: Any) -> RunResult:
        from pyro.spec.load import load_spec

        loaded = load_spec(spec, vars=vars)  # the real loader: errors carry pointers
        self.calls.append(("apply", loaded.spec))
        return run_result(loaded.spec.metadata.name, "applied")

    def create_vm(self, environment: str, **kwargs: Any) -> VMInfo:
        self.calls.append(("create_vm", {"environment": environment, **kwargs}))
        if self.create_hook is not None:
            self.create_hook()
        info = vm_info(f"vm-{len(self.calls)}")
        self.vms[info.id] = info
        return info

    def start_vm(self, vm_id: str) -> VMInfo:
        return self.status_vm(vm_id).model_copy(update={"state": "running"})

    def exec_vm(self, vm_id: str, command: Any, **kwargs: Any) -> ExecOutput:
        self.status_vm(vm_id)
        self.delete_vm(vm_id)
        return ExecOutput(
            vm_id=vm_id,
            exit_code=0,
            timed_out=False,
            stdout="out\n",
            stderr="",
            stdout_truncated=False,
            stderr_truncated=False,
            duration_ms=1,
            deleted=True,
        )

    def status_vm(self, vm_id: str) -> VMInfo:
        if vm_id not in self.vms:
            raise NotFoundError(f"no VM with id '{vm_id}'")
        return self.vms[vm_id]

    def list_vms(self) -> list[VMInfo]:
        return list(self.vms.values())

    def delete_vm(self, vm_id: str) -> bool:
        self.deleted.append(vm_id)
        self.released.set()  # deleting a VM ends whatever ran in it
        return self.vms.pop(vm_id, None) is not None
