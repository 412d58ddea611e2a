"""Local users -> state: the state folder is owner-only whatever the umask, an older 0755
state is tightened when next used, and lock files go with the VMs and tasks they lock."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from pyro import paths
from pyro.errors import NotFoundError
from pyro.machines.registry import VMRegistry, VMState
from pyro.tasks.manager import TaskManager, TaskMeta


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """umask 0: whatever pyro does not restrict itself comes out world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def new_record(registry: VMRegistry, tmp_path: Path, **changes: object) -> str:
    fields: dict[str, object] = {
        "environment": "debian:12",
        "environment_digest": "sha256:0",
        "kernel": tmp_path / "k",
        "initrd": tmp_path / "i",
        "rootfs": tmp_path / "r",
        "backend": "qemu-tcg",
        "vcpus": 1,
        "memory_mib": 128,
    }
    fields.update(changes)
    return registry.create(**fields).id  # type: ignore[arg-type]


@pytest.mark.hostile
@pytest.mark.usefixtures("lax_umask")
def test_state_is_owner_only_under_any_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry = VMRegistry(state)
    vm_id = new_record(registry, tmp_path, kind="task")
    with registry.locked(vm_id):
        pass
    tasks = TaskManager(registry)
    tasks.save_meta(vm_id, TaskMeta(last_activity_at=time.time()))
    with tasks.locked(vm_id):
        pass
    for folder in (state, state / "vms", state / "locks", registry.dir(vm_id)):
        assert mode(folder) == 0o700, folder
    for file in (registry.dir(vm_id) / "vm.json", registry.dir(vm_id) / "task.json"):
        assert mode(file) == 0o600, file
    for lock in (state / "locks").iterdir():
        assert mode(lock) == 0o600, lock


@pytest.mark.hostile
def test_an_older_open_state_is_tightened_when_next_used(tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry = VMRegistry(state)
    vm_id = new_record(registry, tmp_path)
    with registry.locked(vm_id):
        pass
    record_file = registry.dir(vm_id) / "vm.json"
    # What an older pyro left: everything 0755 / 0644.
    for folder in (state, state / "vms", state / "locks"):
        folder.chmod(0o755)
    record_file.chmod(0o644)
    registry.reap()  # every pyro command starts with this
    for folder in (state, state / "vms", state / "locks"):
        assert mode(folder) == 0o700, folder
    registry.save(registry.get(vm_id))
    assert mode(record_file) == 0o600


@pytest.mark.hostile
def test_lock_files_go_with_the_vms_and_tasks_they_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry = VMRegistry(state)
    tasks = TaskManager(registry)
    vm_id = new_record(registry, tmp_path)
    task_id = new_record(registry, tmp_path, kind="task")
    reaped_id = new_record(registry, tmp_path, kind="task", ttl_seconds=1)
    for some_id in (vm_id, task_id, reaped_id):
        with registry.locked(some_id), tasks.locked(some_id):
            pass
        with FileLock(str(state / "locks" / f"task-{some_id}.session.lock")):
            pass  # what a task exec leaves
    assert len(list((state / "locks").iterdir())) == 9
    assert registry.delete(vm_id)
    assert tasks.delete(task_id)
    # A task whose TTL ran out is reaped by the next command, never by TaskManager.delete.
    record = registry.get(reaped_id)
    registry.save(record.model_copy(update={"created_at": record.created_at - 60}))
    assert registry.reap() == [reaped_id]
    # Commands on ids that do not exist (any more) leave no lock behind either.
    with pytest.raises(NotFoundError):
        registry.stop(vm_id)
    with pytest.raises(NotFoundError):
        tasks.touch(task_id)
    with pytest.raises(NotFoundError):
        registry.stop("../../escape")
    assert list((state / "locks").iterdir()) == []
    assert not (tmp_path / "escape.lock").exists()
    assert registry.list() == []


def test_a_lock_taken_while_the_vm_exists_stays(tmp_path: Path) -> None:
    registry = VMRegistry(tmp_path / "state")
    vm_id = new_record(registry, tmp_path)
    registry.kill(vm_id, "test")  # takes the lock; the VM stays
    assert registry.get(vm_id).state is VMState.STOPPED
    assert (tmp_path / "state" / "locks" / f"vm-{vm_id}.lock").exists()


@pytest.mark.usefixtures("lax_umask")
def test_write_private_is_atomic_and_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    target.chmod(0o644)
    paths.write_private(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left


@pytest.mark.usefixtures("lax_umask")
def test_firecracker_leases_are_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyro.net import tap
    from pyro.net.policy import NetworkConfig

    monkeypatch.setattr(tap, "_run", lambda argv, *, netns, stdin=None: "")
    monkeypatch.setenv("PYRO_NET_FIREWALL", "nft")
    net = tap.TapNetwork(tmp_path / "state")
    net.setup("vma", NetworkConfig(policy="egress"))
    assert mode(tmp_path / "state") == 0o700
    assert mode(tmp_path / "state" / "net") == 0o700
    assert mode(tmp_path / "state" / "net" / "leases" / "vma.json") == 0o600
    assert mode(tmp_path / "state" / "net" / "pool.lock") == 0o600


def test_a_state_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    from pyro.errors import StateError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    registry = VMRegistry(blocker)
    assert registry.reap() == []  # listing still works (nothing to list)
    with pytest.raises(StateError, match="cannot make the state folder"):
        new_record(registry, tmp_path)
