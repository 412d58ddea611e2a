"""What the VM registry records about a VM, who owns it, and the host limits on VMs."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class VMState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


class VMRecord(BaseModel):
    """What the registry knows about one VM; persisted as ``vm.json``."""

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Literal["vm", "task"] = "vm"
    name: str | None = None
    labels: dict[str, str] = {}
    environment: str
    environment_digest: str
    backend: str
    vcpus: int
    memory_mib: int
    network: dict[str, Any] | None = None
    kernel: str
    initrd: str
    rootfs: str
    state: VMState = VMState.CREATED
    reason: str = ""
    created_at: float
    started_at: float | None = None
    ttl_seconds: int | None = None
    ephemeral: bool = False
    #: True when the VMM process must survive its owner (the VM may be kept after a run).
    detached: bool = True
    owner_pid: int | None = None
    owner_started: float | None = None
    handle: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The fields users see (no machine-internal handle)."""
        data = self.model_dump(
            mode="json", exclude={"handle", "kernel", "initrd", "rootfs", "extra"}
        )
        data["pid"] = self.handle.get("pid") if self.handle else None
        data["uptime_s"] = (
            round(time.time() - self.started_at, 3)
            if self.state is VMState.RUNNING and self.started_at
            else None
        )
        return data


def check_limits(*, vcpus: int, memory_mib: int, running: int = 0) -> None:
    """Refuse a VM the host cannot hold: vCPUs above the host's, memory above what is free
    for guests, or a VM beyond ``running`` ones when that reaches ``PYRO_MAX_VMS`` (default:
    host memory / 256 MiB).

    Raises:
        LimitError: with what was asked, what the host has, and what to do.
    """
    from pyro.errors import LimitError
    from pyro.vmm.probe import host_memory_mib

    host_cpus = os.cpu_count() or 1
    if vcpus > max(host_cpus, 1) * 4:
        raise LimitError(
            f"{vcpus} vCPUs asked; this host has {host_cpus} CPUs (at most {host_cpus * 4} vCPUs)"
        )
    total_mib = host_memory_mib()
    if memory_mib > total_mib:
        raise LimitError(f"{memory_mib} MiB of guest memory asked; this host has {total_mib} MiB")
    limit = int(os.environ.get("PYRO_MAX_VMS", "0") or 0) or max(1, total_mib // 256)
    if running >= limit:
        raise LimitError(
            f"{running} VMs are running, the limit is {limit}",
            "delete VMs or tasks you no longer need (pyro vm list / pyro task list), "
            "or raise PYRO_MAX_VMS",
        )
