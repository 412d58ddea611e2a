"""A VM from an install: the one way pyro records a new VM.

A VM is made of an installed environment's kernel and root filesystem, pyro's agent
initramfs, a backend, resources and a network policy: its :class:`Shape`. ``pyro run``
(a plan's boot step), the warm pool, ``pyro vm create`` and ``pyro task create`` all make
their shape here and record it with :func:`create`; the host's limits are checked as the
record is made. Booting it — the backend's VM configuration, spawn or restore, the wait
for the agent's hello — is :meth:`pyro.machines.registry.VMRegistry.start`, for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pyro.errors import UsageError
from pyro.net.policy import NetworkConfig
from pyro.spec import limits

if TYPE_CHECKING:
    from pyro.environments.cache.store import Install
    from pyro.machines.registry import VMRecord, VMRegistry


@dataclass(frozen=True)
class Shape:
    """What a VM is made of. Two VMs of one shape are interchangeable (the warm pool hands
    out a guest of the shape a run asks for)."""

    environment: str
    environment_digest: str
    kernel: Path
    initrd: Path
    rootfs: Path
    backend: str
    vcpus: int
    memory_mib: int
    network: NetworkConfig | None = None
    """None: no network, and the record states none (``pyro vm``/``pyro task`` VMs); a
    plan's boot step always states its policy."""


def shape_of(
    install: Install,
    *,
    backend: str,
    vcpus: int | None = None,
    memory_mib: int | None = None,
    network: NetworkConfig | None = None,
    environment: str | None = None,
    initrd: Path | None = None,
) -> Shape:
    """The shape of a VM booting ``install``: vCPUs and memory default to the
    environment's; ``initrd`` to pyro's agent initramfs (built once, then cached);
    ``environment`` to the install's name.

    Raises:
        GuestError: the agent initramfs cannot be built.
    """
    if initrd is None:
        from pyro.guest.build import build_agent_initrd

        initrd = build_agent_initrd()
    return Shape(
        environment=install.name if environment is None else environment,
        environment_digest=install.digest,
        kernel=install.kernel,
        initrd=initrd,
        rootfs=install.rootfs,
        backend=backend,
        vcpus=vcpus or install.default_vcpus,
        memory_mib=memory_mib or install.default_memory_mib,
        network=network,
    )


def resolve(
    environment: str,
    *,
    backend: str | None = None,
    vcpus: int | None = None,
    memory_mib: int | None = None,
) -> Shape:
    """The shape of a VM of ``environment`` (catalog name, spec path or oci:// reference),
    pulled or built first when it is not installed, on ``backend`` (None: the best one here).

    Raises:
        UsageError: ``vcpus`` or ``memory_mib`` is outside what a Run spec allows (checked
            first: 0 is not "the default").
        EnvironmentNotFoundError: unknown environment.  RegistryError, BuildError.
        BackendUnavailableError: no backend can run a guest here.
    """
    from pyro.environments import service
    from pyro.vmm import select_backend

    check_resources(vcpus=vcpus, memory_mib=memory_mib)
    install = service.pull(environment)
    chosen = select_backend(backend)
    return shape_of(install, backend=chosen.name, vcpus=vcpus, memory_mib=memory_mib)


def check_resources(*, vcpus: int | None, memory_mib: int | None) -> None:
    """Raises: UsageError: a given value is outside the Run spec's bounds (pyro.spec.limits)."""
    for what, value, (low, high) in (
        ("vcpus", vcpus, limits.VCPUS),
        ("memory_mib", memory_mib, limits.MEMORY_MIB),
    ):
        if value is not None and not low <= value <= high:
            bound = f"between {low} and {high}"
            raise UsageError(f"{what} is {value}; it must be {bound}", f"give {what} {bound}")


def create(
    registry: VMRegistry,
    shape: Shape,
    *,
    kind: Literal["vm", "task"] = "vm",
    name: str | None = None,
    labels: dict[str, str] | None = None,
    ttl_seconds: int | None = None,
    ephemeral: bool = False,
    vmm_outlives_owner: bool | None = None,
) -> VMRecord:
    """Record a new VM of ``shape`` (not started; :meth:`VMRegistry.start` boots it).

    ``ephemeral``: the VM belongs to this process and is reaped once it is gone; its VMM
    dies with the process too unless ``vmm_outlives_owner`` (see :meth:`VMRegistry.create`).

    Raises:
        LimitError: the host cannot hold the VM (vCPUs, memory, running VMs).
    """
    return registry.create(
        environment=shape.environment,
        environment_digest=shape.environment_digest,
        kernel=shape.kernel,
        initrd=shape.initrd,
        rootfs=shape.rootfs,
        backend=shape.backend,
        vcpus=shape.vcpus,
        memory_mib=shape.memory_mib,
        kind=kind,
        name=name,
        labels=labels,
        ttl_seconds=ttl_seconds,
        ephemeral=ephemeral,
        vmm_outlives_owner=vmm_outlives_owner,
        network=None if shape.network is None else shape.network.to_dict(),
    )
