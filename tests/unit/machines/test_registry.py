"""The VM registry's bookkeeping, without booting anything."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pyro.errors import LimitError
from pyro.machines.registry import VMRegistry, VMState, check_limits


def _record_with_dead_vmm(registry: VMRegistry, tmp_path: Path) -> str:
    record = registry.create(
        environment="debian:12",
        environment_digest="sha256:0",
        kernel=tmp_path / "k",
        initrd=tmp_path / "i",
        rootfs=tmp_path / "r",
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=128,
    )
    gone = subprocess.Popen(["true"])
    gone.wait()
    handle = {
        "vm_id": record.id,
        "backend": "qemu-tcg",
        "pid": gone.pid,
        "workdir": str(registry.dir(record.id)),
        "agent_endpoint": "agent.sock",
        "started_at": time.time(),
        "start_ticks": 1.0,
    }
    registry.save(record.model_copy(update={"state": VMState.RUNNING, "handle": handle}))
    return record.id


def test_reap_marks_a_vm_whose_vmm_died_stopped_with_the_reason(tmp_path: Path) -> None:
    registry = VMRegistry(tmp_path / "state")
    vm_id = _record_with_dead_vmm(registry, tmp_path)
    assert registry.reap() == [vm_id]
    record = registry.get(vm_id)
    assert record.state is VMState.STOPPED and "exited" in record.reason


def test_reap_never_resurrects_a_vm_deleted_meanwhile(tmp_path: Path) -> None:
    # The owner kills the VMM, then removes the VM's directory; a concurrent reap that saw
    # the record before must not write it back.
    registry = VMRegistry(tmp_path / "state")
    vm_id = _record_with_dead_vmm(registry, tmp_path)
    stale = registry.get(vm_id)
    assert registry.delete(vm_id)
    assert stale.state is VMState.RUNNING
    assert registry._mark_dead_if_still(vm_id) is False
    assert not registry.dir(vm_id).exists()
    assert registry.list() == []


def test_a_vm_past_pyro_max_vms_running_ones_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = VMRegistry(tmp_path / "state")
    first = _record_with_dead_vmm(registry, tmp_path)
    registry.save(registry.get(first))  # RUNNING, as far as the registry knows
    monkeypatch.setenv("PYRO_MAX_VMS", "1")
    with pytest.raises(LimitError, match="1 VMs are running, the limit is 1"):
        _record_with_dead_vmm(registry, tmp_path)
    monkeypatch.setenv("PYRO_MAX_VMS", "2")
    assert _record_with_dead_vmm(registry, tmp_path) != first
    check_limits(vcpus=1, memory_mib=1)  # nothing running: no count to exceed
