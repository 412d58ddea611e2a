"""What pyro reports about a VM: its public record (:class:`VMInfo`) and its serial log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from pyro.machines.registry import VMRecord, VMRegistry


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


def read_logs(registry: VMRegistry, vm_id: str, *, tail: int | None = None) -> VMLogs:
    """The guest's serial console log (the last ``tail`` lines, or all of it).

    Raises:
        NotFoundError: no such VM.
    """
    registry.get(vm_id)
    path = registry.serial_log_path(vm_id)
    try:
        text = path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    except FileNotFoundError:
        text = ""
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return VMLogs(vm_id=vm_id, serial=text)
