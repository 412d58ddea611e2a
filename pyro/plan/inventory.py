"""The planner's view of the world: plain data, gathered by :mod:`pyro.host.gather`.

Pure: the planner only ever sees these values; it never asks the host itself.
Inventory values carry no absolute host paths: a path in it is relative to the Run spec's
folder, which the plan records once (``Plan.spec_dir``).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pyro.spec.environment import EnvironmentSpec

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
    digest: str = Field(
        description="sha256:... of the install manifest: this cache's install (saved guests "
        "are keyed by it), which differs between machines holding the same bytes."
    )
    content_digest: str = Field(
        description="sha256:... over the kernel's and rootfs's sha256: what the install "
        "holds, the same on every machine with the same bytes (plans pin this)."
    )
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
    document: EnvironmentSpec = Field(description="The Environment document a build uses.")
    folder: str | None = Field(
        description="Where the document's relative paths (its kernel fragment) resolve, "
        "relative to the Run spec's folder; None: pyro's own catalog folder."
    )
    buildable: bool = Field(description="The host has the tools to build it.")
    source: str | None = Field(default=None, description="oci:// reference 'env pull' would use.")
    default_vcpus: int = 1
    default_memory_mib: int = 512


class RemoteEnvironment(_Data):
    """An oci:// reference resolved to a manifest digest by asking the registry."""

    ref: str
    digest: str


class UnresolvedRemote(_Data):
    """An oci:// reference the registry did not resolve: unreachable, refused or unknown."""

    ref: str
    reason: str = Field(description="The registry's failure, naming the registry.")


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


class SourceContent(_Data):
    """The content of one copy-in source (``files[].source``) when the plan was made."""

    path: str = Field(description="As written in the spec: relative to the spec's folder.")
    digest: str | None = Field(
        description="sha256:... over its files' relative paths, modes and bytes "
        "(pyro.execute.transfer.source_digest); None: missing, unreadable or not copyable."
    )
    files: int = Field(default=0, description="How many regular files it copies.")
    bytes: int = Field(default=0, description="How many bytes of file content it copies.")


class DiskCopy(_Data):
    """When a copy-in goes by the VM's spare disk instead of the agent (QEMU): its
    ``bytes + files * file_weight`` reaches ``min_bytes`` on a cold boot, and
    ``restored_min_bytes`` in a restored saved guest (pyro.machines.pushdisk.rule)."""

    min_bytes: int
    file_weight: int
    restored_min_bytes: int | None = Field(
        default=None,
        description="None: a restored guest's copy-ins go through the agent (measured no "
        "faster by disk there, docs/performance.md).",
    )


class Inventory(_Data):
    host: HostInfo
    backends: list[BackendInfo] = []
    installed: list[InstalledEnvironment] = []
    catalog: list[CatalogEnvironment] = []
    remote: list[RemoteEnvironment] = []
    unresolved: list[UnresolvedRemote] = Field(
        default=[],
        description="Pull sources whose registry was asked and gave no digest, with why.",
    )
    builds_forbidden: bool = Field(
        default=False,
        description="$PYRO_NO_BUILD (--no-build): a Run that would build its environment "
        "fails to plan instead.",
    )
    agent_digest: str | None = Field(
        default=None,
        description="sha256:... of the built guest agent initrd (saved guests are keyed by "
        "it); None until it is built.",
    )
    agent_source_digest: str | None = Field(
        default=None,
        description="sha256:... of the guest agent's sources and build flags: the agent a "
        "plan pins (the same on every machine with this pyro).",
    )
    sources: list[SourceContent] = Field(
        default=[],
        description="Copy-in sources of the Run being planned (digested by "
        "pyro.execute.prepare.source_contents, beside the copy code that they pin).",
    )
    disk_copy: DiskCopy | None = Field(
        default=None,
        description="The rule for copy-ins by disk; None: every copy-in goes through the agent.",
    )
    snapshots: list[SavedGuest] = Field(
        default=[], description="Saved ready guests (empty when warm starts are off)."
    )
