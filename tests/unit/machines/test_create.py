"""``pyro.machines.create``: one way to make a VM from an install, for every caller.

A fake backend (tests/helpers/vmm.py) records the VM configuration each boot gets and
boots a fake agent that speaks the real wire protocol, so the SDK, the task and the warm
pool paths run whole: shape, record, limits, boot, hello, exec.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pyro.environments.cache.store import Install
from pyro.errors import LimitError, NotFoundError, UsageError
from pyro.machines.create import Shape, create, resolve, shape_of
from pyro.machines.exec import TIMEOUT_EXIT_CODE
from pyro.machines.registry import VMRegistry
from pyro.net.policy import NetworkConfig
from pyro.vmm.base import VMConfig
from tests.helpers.vmm import Exec, FakeBackend, Reply

INSTALL = Install(
    name="debian:12",
    digest="sha256:" + "1" * 64,
    version="1.0.0",
    dir=Path("/cache/env"),
    kernel=Path("/cache/env/vmlinux"),
    rootfs=Path("/cache/env/rootfs.ext4"),
    manifest={"defaults": {"vcpus": 2, "memoryMiB": 384}},
)
INITRD = Path("/cache/agent/agent.cpio")


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeBackend:
    """The fake backend, an installed debian:12 and a cached agent initrd; state in tmp."""
    from pyro.environments import service
    from pyro.guest import build

    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    pulled: list[str] = []

    def pull(value: str, **options: Any) -> Install:
        pulled.append(value)
        return INSTALL

    monkeypatch.setattr(service, "pull", pull)
    monkeypatch.setattr(build, "build_agent_initrd", lambda cache_root=None: INITRD)
    fake = FakeBackend().install(monkeypatch)
    fake.pulled = pulled  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def registry(tmp_path: Path) -> VMRegistry:
    return VMRegistry(tmp_path / "state")


def test_a_shape_takes_the_environments_defaults_unless_told(backend: FakeBackend) -> None:
    assert shape_of(INSTALL, backend="fake") == Shape(
        environment="debian:12",
        environment_digest=INSTALL.digest,
        kernel=INSTALL.kernel,
        initrd=INITRD,  # the agent initrd, built (here: faked) when not given
        rootfs=INSTALL.rootfs,
        backend="fake",
        vcpus=2,
        memory_mib=384,
    )
    shape = shape_of(
        INSTALL,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=1024,
        network=NetworkConfig(policy="egress"),
        environment="debian:12-as-planned",
        initrd=Path("/other.cpio"),
    )
    assert (shape.vcpus, shape.memory_mib, shape.environment, shape.initrd) == (
        1,
        1024,
        "debian:12-as-planned",
        Path("/other.cpio"),
    )
    bare = Install(**{**INSTALL.__dict__, "manifest": {"defaults": "not a mapping"}})
    assert (shape_of(bare, backend="fake").vcpus, shape_of(bare, backend="fake").memory_mib) == (
        1,
        512,
    )


def test_resolve_pulls_the_environment_and_chooses_the_backend(backend: FakeBackend) -> None:
    shape = resolve("debian:12", vcpus=1)
    assert backend.pulled == ["debian:12"]  # type: ignore[attr-defined]
    assert (shape.backend, shape.vcpus, shape.memory_mib, shape.network) == ("fake", 1, 384, None)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"vcpus": 0}, "vcpus is 0; it must be between 1 and 32"),
        ({"vcpus": 33}, "vcpus is 33; it must be between 1 and 32"),
        ({"memory_mib": 0}, "memory_mib is 0; it must be between 128 and 65536"),
    ],
)
def test_resolve_refuses_resources_out_of_range_before_pulling(
    backend: FakeBackend, resources: dict[str, int], message: str
) -> None:
    # 0 used to mean "the environment's default" here (vm create --vcpus 0 made 1 vCPU).
    with pytest.raises(UsageError, match=message):
        resolve("debian:12", **resources)
    assert backend.pulled == []  # type: ignore[attr-defined]


def test_the_record_states_the_shape_and_how_the_vm_is_owned(
    backend: FakeBackend, registry: VMRegistry
) -> None:
    shape = shape_of(INSTALL, backend="fake")
    record = create(registry, shape, kind="task", name="t", labels={"a": "b"}, ttl_seconds=60)
    assert (record.kind, record.name, record.labels, record.ttl_seconds) == (
        "task",
        "t",
        {"a": "b"},
        60,
    )
    assert (record.kernel, record.initrd, record.rootfs) == (
        str(INSTALL.kernel),
        str(INITRD),
        str(INSTALL.rootfs),
    )
    assert record.network is None and not record.ephemeral and record.detached
    egress = Shape(**{**shape.__dict__, "network": NetworkConfig(policy="egress")})
    run_vm = create(registry, egress, ephemeral=True, vmm_outlives_owner=False)
    assert run_vm.network == {"policy": "egress", "allow": [], "publish": []}
    assert run_vm.ephemeral and not run_vm.detached and run_vm.owner_pid == os.getpid()


def test_a_vm_the_host_cannot_hold_is_refused_before_it_is_recorded(
    backend: FakeBackend, registry: VMRegistry
) -> None:
    huge = shape_of(INSTALL, backend="fake", vcpus=(os.cpu_count() or 1) * 4 + 1)
    with pytest.raises(LimitError, match="vCPUs asked"):
        create(registry, huge)
    assert registry.list() == []


def test_a_created_vm_boots_with_its_shape_and_answers(
    backend: FakeBackend, registry: VMRegistry
) -> None:
    shape = shape_of(INSTALL, backend="fake", network=NetworkConfig(policy="egress"))
    record = create(registry, shape, ephemeral=True, vmm_outlives_owner=False)
    started, client = registry.start(record.id)
    with client:
        assert client.info.agent_version == "fake"  # the hello was answered
    assert started.state == "running"
    assert backend.configs == [
        VMConfig(
            vm_id=record.id,
            workdir=registry.dir(record.id),
            kernel=INSTALL.kernel,
            initrd=INITRD,
            rootfs=INSTALL.rootfs,
            vcpus=2,
            memory_mib=384,
            network=NetworkConfig(policy="egress"),
            ephemeral=True,
        )
    ]
    assert registry.delete(record.id) and backend.running == set()


def test_the_sdk_makes_and_runs_its_vms_here(backend: FakeBackend) -> None:
    from pyro.sdk import Pyro

    backend.script = lambda call: Reply(stdout=b"up\n", exit_code=None, signal=9)
    pyro = Pyro()
    info = pyro.create_vm("debian:12", memory_mib=256, name="one")
    assert (info.environment, info.backend, info.vcpus, info.memory_mib) == (
        "debian:12",
        "fake",
        2,
        256,
    )
    assert info.state == "created" and info.network is None
    out = pyro.exec_vm(info.id, "uptime", timeout_seconds=9)
    assert (out.exit_code, out.signal, out.stdout) == (137, 9, "up\n")
    assert backend.execs[-1].argv == ["/bin/sh", "-c", "uptime"]
    with pytest.raises(NotFoundError):
        pyro.status_vm(info.id)


def test_a_task_is_made_here_and_its_commands_end_as_the_others(backend: FakeBackend) -> None:
    from pyro.sdk import Pyro

    pyro = Pyro()
    task = pyro.create_task("debian:12", vcpus=1, secrets={"TOKEN": "s3cret-value"})
    try:
        assert (task.state, task.vcpus, task.memory_mib) == ("running", 1, 384)
        assert [c.vm_id for c in backend.configs] == [task.id]
        replies = {
            "fail": Reply(exit_code=3, stderr=b"s3cret-value leaked\n"),
            "kill": Reply(exit_code=None, signal=15),
            "hang": Reply(exit_code=None, signal=9, timed_out=True),
        }
        backend.script = lambda call: replies.get(call.argv[-1], Reply())
        codes = {}
        for name in replies:
            out = pyro.exec_task(task.id, ["run", name], secret_env=["TOKEN"], timeout_seconds=5)
            codes[name] = (out.exit_code, out.timed_out)
            if name == "fail":
                assert out.stderr == "[REDACTED:TOKEN] leaked\n"
        assert codes == {
            "fail": (3, False),
            "kill": (143, False),
            "hang": (TIMEOUT_EXIT_CODE, True),
        }
        call: Exec = backend.execs[-1]
        assert (call.cwd, call.env, call.timeout_ms) == (
            "/workspace",
            {"TOKEN": "s3cret-value"},
            5000,
        )
        journal = pyro.logs_task(task.id).entries
        assert [(e.exit_code, e.timed_out) for e in journal] == list(codes.values())
    finally:
        assert pyro.delete_task(task.id)
    assert backend.running == set()


def test_the_warm_pool_fills_with_vms_made_here(
    backend: FakeBackend, registry: VMRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyro.execute.pool import WarmPool

    monkeypatch.delenv("PYRO_WARM", raising=False)
    shape = shape_of(INSTALL, backend="fake", network=NetworkConfig(policy="off"))
    pool = WarmPool(1, registry)
    try:
        assert pool.take(shape) is None  # empty: the pool now follows this shape
        assert pool.wait_filled(20), pool.last_error
        pooled = pool.take(shape)
        assert pooled is not None
        record = registry.get(pooled.vm_id)
        assert record.ephemeral and not record.detached
        assert record.network == {"policy": "off", "allow": [], "publish": []}
        assert backend.configs[0].initrd == INITRD and backend.configs[0].vcpus == 2
        pooled.client.close()
        registry.delete(pooled.vm_id)
    finally:
        pool.close()
    assert registry.list() == []
