"""The planner's view of the world: plain data, gathered by :mod:`pyro.host.gather`.

Pure: the planner only ever sees these values; it never asks the host itself.
Inventory values carry no machine paths, so plans made from them are portable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

KvmKind = Literal["hardware", "pvm", "none"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostInfo(_Data):
    arch: str = Field(description="Machine architecture, e.g. x86_64.")
    cpus: int
    memory_mib: int
    kvm: KvmKind


class BackendInfo(_Data):
    name: Literal["firecracker", "qemu-kvm", "qemu-tcg"]
    usable: bool
    version: str | None = None
    reason: str = Field(default="", description="Why the backend is not usable (empty when it is).")
    can_exec: bool = Field(
        default=True, description="False where a guest boots but cannot run user space (PVM)."
    )


class InstalledEnvironment(_Data):
    """An environment in the local cache that passed the cheap validity check."""

    name: str
    version: str
    digest: str = Field(description="sha256:... digest of the install manifest.")
    source: str | None = Field(
        default=None, description="oci:// reference it was pulled from, if any."
    )
    spec_digest: str | None = Field(
        default=None, description="sha256:... of the spec it was built from, when recorded."
    )
    default_vcpus: int = 1
    default_memory_mib: int = 512


class CatalogEnvironment(_Data):
    """An environment pyro knows how to obtain: from the catalog or a referenced spec."""

    ref: str = Field(description="The reference as written: catalog name, spec path or oci:// ref.")
    name: str
    version: str
    spec_digest: str = Field(description="sha256:... of the spec and its build inputs.")
    buildable: bool = Field(description="The host has the tools to build it.")
    source: str | None = Field(default=None, description="oci:// reference 'env pull' would use.")
    default_vcpus: int = 1
    default_memory_mib: int = 512


class RemoteEnvironment(_Data):
    """An oci:// reference resolved to a manifest digest by asking the registry."""

    ref: str
    digest: str


class SavedGuest(_Data):
    """A saved ready guest (pyro.vmm.snapshot) that passed the cheap check, for a VMM
    version the host still has: a boot of this shape can restore instead of booting."""

    environment_digest: str
    agent_digest: str
    backend: str
    vcpus: int
    memory_mib: int
    network: Literal["off", "egress"] = Field(
        default="off", description="The network policy the guest was saved with."
    )


class Inventory(_Data):
    host: HostInfo
    backends: list[BackendInfo] = []
    installed: list[InstalledEnvironment] = []
    catalog: list[CatalogEnvironment] = []
    remote: list[RemoteEnvironment] = []
    agent_digest: str | None = Field(
        default=None, description="sha256:... of the guest agent initrd."
    )
    snapshots: list[SavedGuest] = Field(
        default=[], description="Saved ready guests (empty when warm starts are off)."
    )
