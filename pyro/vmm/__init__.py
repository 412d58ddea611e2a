"""VMM backends: a Protocol, one module per VMM, a registry and backend selection."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from pyro.errors import BackendUnavailableError
from pyro.plan.inventory import BackendInfo
from pyro.vmm.base import Backend, NetworkConfig, VMConfig, VMHandle
from pyro.vmm.firecracker import FirecrackerBackend
from pyro.vmm.qemu import QemuBackend

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Backend",
    "NetworkConfig",
    "VMConfig",
    "VMHandle",
    "get_backend",
    "select_backend",
]

BACKENDS: dict[str, Backend] = {
    "firecracker": FirecrackerBackend(),
    "qemu-kvm": QemuBackend("kvm"),
    "qemu-tcg": QemuBackend("tcg"),
}
#: Automatic selection tries these in order and takes the first that can run commands.
AUTO_ORDER = ("firecracker", "qemu-kvm", "qemu-tcg")


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``.

    Raises:
        BackendUnavailableError: when no backend has that name.
    """
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown backend {name!r}",
            hint=f"choose one of: {', '.join(sorted(BACKENDS))}, or leave it unset for auto",
        ) from None


def select_backend(
    requested: str | None = None,
    *,
    probe: Callable[[], Sequence[BackendInfo]] | None = None,
) -> Backend:
    """The backend to use: ``requested``, else ``$PYRO_BACKEND``, else the first usable
    of firecracker → qemu-kvm → qemu-tcg that can run commands.

    Raises:
        BackendUnavailableError: when the named backend, or every backend, is unusable;
            the summary carries each backend's reason.
    """
    if probe is None:
        from pyro.vmm.probe import probe_backends

        probe = probe_backends
    name = requested or os.environ.get("PYRO_BACKEND") or None
    if name is not None and name != "auto":
        backend = get_backend(name)
        info = _find(probe(), name)
        if info is None or not info.usable:
            reason = info.reason if info is not None else "not probed"
            raise BackendUnavailableError(f"backend {name!r} cannot run here: {reason}")
        return backend
    infos = probe()
    for candidate in AUTO_ORDER:
        info = _find(infos, candidate)
        if info is not None and info.usable and info.can_exec:
            return BACKENDS[candidate]
    reasons = "; ".join(f"{info.name}: {info.reason or 'cannot run commands'}" for info in infos)
    raise BackendUnavailableError(f"no VMM backend can run a guest here ({reasons})")


def _find(infos: Sequence[BackendInfo], name: str) -> BackendInfo | None:
    return next((info for info in infos if info.name == name), None)
