"""VMM backends: a Protocol, one module per VMM, a registry and backend selection.

A backend's module is imported when that backend is first asked for: a run on QEMU never
loads the Firecracker module (and its TAP/nft plumbing), and planning loads neither. The
protocol's types (``pyro.vmm.base``) are resolved on first use too: planning imports
``pyro.vmm.probe`` and ``pyro.vmm.snapshot``, which need none of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from pyro.errors import BackendUnavailableError
from pyro.lazy import lazy_attributes
from pyro.plan.inventory import BackendInfo

if TYPE_CHECKING:
    from pyro.vmm.base import Backend, VMConfig, VMHandle

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Backend",
    "VMConfig",
    "VMHandle",
    "get_backend",
    "select_backend",
]


def _firecracker() -> Backend:
    from pyro.vmm.firecracker import FirecrackerBackend

    return FirecrackerBackend()


def _qemu(accel: str) -> Callable[[], Backend]:
    def make() -> Backend:
        from pyro.vmm.qemu import QemuBackend

        return QemuBackend("kvm" if accel == "kvm" else "tcg")

    return make


class _Backends(Mapping[str, "Backend"]):
    """Backend name → backend, each made (and its module imported) on first lookup."""

    def __init__(self, factories: dict[str, Callable[[], Backend]]) -> None:
        self._factories = factories
        self._made: dict[str, Backend] = {}

    def __getitem__(self, name: str) -> Backend:
        if name not in self._made:
            self._made[name] = self._factories[name]()
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)


BACKENDS: Mapping[str, Backend] = _Backends(
    {"firecracker": _firecracker, "qemu-kvm": _qemu("kvm"), "qemu-tcg": _qemu("tcg")}
)
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


__getattr__ = lazy_attributes(
    __name__, {name: "pyro.vmm.base" for name in ("Backend", "VMConfig", "VMHandle")}
)
