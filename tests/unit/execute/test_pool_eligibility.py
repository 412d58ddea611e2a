"""Which boot steps the warm pool may serve (logic only; tests/e2e/test_pool.py boots guests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyro.environments.cache.store import Install
from pyro.errors import LimitError
from pyro.execute.pool import MAX_POOL_SIZE, Pooled, WarmPool, take_for_boot
from pyro.machines.create import Shape, shape_of
from pyro.net.policy import NetworkConfig
from pyro.plan.model import BootStep, PlanNetwork

INSTALL = Install(
    name="debian:12",
    digest="sha256:" + "1" * 64,
    version="1.0.0",
    dir=Path("/cache/env"),
    kernel=Path("/cache/env/vmlinux"),
    rootfs=Path("/cache/env/rootfs.ext4"),
    manifest={},
)
INITRD = Path("/cache/agent/agent.cpio")


class FakePool:
    def __init__(self) -> None:
        self.asked: list[Shape] = []

    def take(self, shape: Shape) -> Pooled | None:
        self.asked.append(shape)
        return None


def boot(**fields: Any) -> BootStep:
    base: dict[str, Any] = {
        "id": "boot",
        "backend": "qemu-tcg",
        "vcpus": 1,
        "memory_mib": 512,
        "environment_digest": INSTALL.digest,
        "agent_digest": None,
        "network": PlanNetwork(policy="off"),
        "mode": "restore",
    }
    return BootStep(**{**base, **fields})


def ask(step: BootStep, *, keep: bool = False) -> list[Shape]:
    """The shapes a run's boot step asks the pool for (as apply makes the shape)."""
    pool = FakePool()
    shape = shape_of(
        INSTALL,
        initrd=INITRD,
        backend=step.backend or "qemu-tcg",
        vcpus=step.vcpus,
        memory_mib=step.memory_mib,
        network=NetworkConfig.from_dict(step.network.model_dump(mode="json")),
    )
    take_for_boot(pool, shape, step, keep=keep)  # type: ignore[arg-type]
    return pool.asked


def test_a_restore_boot_asks_for_its_exact_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRO_WARM", raising=False)
    assert ask(boot(vcpus=2, memory_mib=1024)) == [
        Shape(
            environment="debian:12",
            environment_digest=INSTALL.digest,
            kernel=INSTALL.kernel,
            initrd=INITRD,
            rootfs=INSTALL.rootfs,
            backend="qemu-tcg",
            vcpus=2,
            memory_mib=1024,
            network=NetworkConfig(policy="off"),
        )
    ]


@pytest.mark.parametrize(
    ("step", "keep"),
    [
        (boot(mode="cold"), False),
        (boot(network=PlanNetwork(policy="allowlist", allow=["127.0.0.1:80"])), False),
        (boot(network=PlanNetwork(policy="egress", publish=[{"host": 8080, "guest": 80}])), False),
        (boot(network=PlanNetwork(policy="off", publish=[{"host": 8080, "guest": 80}])), False),
        (boot(), True),  # a VM kept after the run must not come from the pool
        (boot(backend=None), False),
    ],
    ids=["cold", "allowlist", "egress-published", "published", "kept", "no-backend"],
)
def test_other_boots_never_touch_the_pool(
    step: BootStep, keep: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYRO_WARM", raising=False)
    assert ask(step, keep=keep) == []


def test_an_egress_restore_asks_for_an_egress_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRO_WARM", raising=False)
    [shape] = ask(boot(network=PlanNetwork(policy="egress")))
    assert shape.network == NetworkConfig(policy="egress")
    assert ask(boot())[0].network == NetworkConfig(policy="off")


def test_warm_starts_off_means_no_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_WARM", "0")
    assert ask(boot()) == []


@pytest.mark.parametrize("size", [0, -1, MAX_POOL_SIZE + 1])
def test_pool_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="warm pool holds"):
        WarmPool(size, registry=None)  # type: ignore[arg-type]


class RefusingRegistry:
    """A registry that refuses every VM, as when PYRO_MAX_VMS is reached."""

    def __init__(self) -> None:
        self.creates = 0

    def create(self, **fields: Any) -> Any:
        self.creates += 1
        raise LimitError("3 VMs are running, the limit is 3")


def test_a_failed_fill_is_recorded_and_not_retried_in_a_loop() -> None:
    registry = RefusingRegistry()
    pool = WarmPool(2, registry)  # type: ignore[arg-type]
    shape = ask_shape()
    try:
        assert pool.take(shape) is None
        assert pool.wait_filled(10) is False  # returns once the fill has failed
        assert isinstance(pool.last_error, LimitError)
        assert registry.creates == 1  # not retried until the next take()
        assert pool.take(shape) is None
        assert pool.wait_filled(10) is False
        assert registry.creates == 2
    finally:
        pool.close()
    assert pool.take(shape) is None  # closed: never fills again
    assert registry.creates == 2


def ask_shape() -> Shape:
    return Shape(
        environment="debian:12",
        environment_digest=INSTALL.digest,
        kernel=INSTALL.kernel,
        initrd=INITRD,
        rootfs=INSTALL.rootfs,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=512,
    )
