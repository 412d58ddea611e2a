"""Hand-written inventories and specs for planner tests (no host access)."""

from __future__ import annotations

from typing import Any

from pyro.plan.inventory import (
    BackendInfo,
    CatalogEnvironment,
    HostInfo,
    InstalledEnvironment,
    Inventory,
    RemoteEnvironment,
)
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.model import RunSpec

INSTALLED_DIGEST = "sha256:" + "1" * 64
SPEC_DIGEST = "sha256:" + "2" * 64
REMOTE_DIGEST = "sha256:" + "3" * 64
AGENT_DIGEST = "sha256:" + "4" * 64
CONTENT_DIGEST = "sha256:" + "5" * 64
AGENT_SOURCE_DIGEST = "sha256:" + "6" * 64
SOURCE = "oci://127.0.0.1:5000/pyro/debian:12"

HOST = HostInfo(arch="x86_64", cpus=2, memory_mib=4096, kvm="pvm")
BACKENDS = [
    BackendInfo(name="firecracker", usable=False, reason="firecracker binary not found"),
    BackendInfo(name="qemu-kvm", usable=True, version="7.2.22", can_exec=False),
    BackendInfo(name="qemu-tcg", usable=True, version="7.2.22"),
]


def environment_spec(name: str = "local:1", **spec: Any) -> EnvironmentSpec:
    body: dict[str, Any] = {
        "version": "0.1.0",
        "kernel": {"fragment": "kernels/pyro-6.1.config"},
        "rootfs": {"packages": ["git"]},
        "defaults": {"vcpus": 2, "memoryMiB": 256},
    }
    body.update(spec)
    return EnvironmentSpec.model_validate(
        {"apiVersion": "pyro/v1", "kind": "Environment", "metadata": {"name": name}, "spec": body}
    )


CATALOG = CatalogEnvironment(
    ref="debian:12",
    name="debian:12",
    version="1.0.0",
    spec_digest=SPEC_DIGEST,
    document=environment_spec(
        "debian:12", version="1.0.0", defaults={"vcpus": 1, "memoryMiB": 512}
    ),
    folder=None,
    buildable=True,
    default_vcpus=1,
    default_memory_mib=512,
)


def inventory(variant: str, **changes: Any) -> Inventory:
    """``installed``, ``pullable`` or ``buildable`` debian:12 on a PVM host with qemu-tcg."""
    base = Inventory(
        host=HOST,
        backends=BACKENDS,
        agent_digest=AGENT_DIGEST,
        agent_source_digest=AGENT_SOURCE_DIGEST,
    )
    if variant == "installed":
        base = base.model_copy(
            update={
                "catalog": [CATALOG],
                "installed": [
                    InstalledEnvironment(
                        name="debian:12",
                        version="1.0.0",
                        digest=INSTALLED_DIGEST,
                        content_digest=CONTENT_DIGEST,
                        spec_digest=SPEC_DIGEST,
                        default_memory_mib=768,
                    )
                ],
            }
        )
    elif variant == "pullable":
        entry = CATALOG.model_copy(update={"source": SOURCE, "buildable": False})
        remote = [RemoteEnvironment(ref=SOURCE, digest=REMOTE_DIGEST)]
        base = base.model_copy(update={"catalog": [entry], "remote": remote})
    elif variant == "buildable":
        base = base.model_copy(update={"catalog": [CATALOG]})
    elif variant != "empty":
        raise ValueError(variant)
    return base.model_copy(update=changes)


def run_spec(**spec: Any) -> RunSpec:
    body: dict[str, Any] = {"environment": "debian:12", "steps": [{"name": "hi", "run": "echo hi"}]}
    body.update(spec)
    return RunSpec.model_validate(
        {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "t"}, "spec": body}
    )
