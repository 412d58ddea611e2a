"""The Firecracker backend's control plane against a real Firecracker binary.

On a PVM host (see docs/host-requirements.md) the guest kernel boots but user space
cannot run, so this checks spawn → API → configure → InstanceStart → kernel console
output → kill → nothing left, not a command inside the guest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.vmm.firecracker import FirecrackerBackend
from pyro.vmm.probe import detect_kvm, probe_backends
from tests.helpers.firecracker import firecracker_binary as _firecracker_binary
from tests.helpers.vmm import (
    VMFactory,
    assert_nothing_left,
    test_kernel,
    tiny_initramfs,
    wait_for_serial,
)

firecracker_binary = _firecracker_binary  # the fixture, re-exported for this module

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no usable /dev/kvm"),
]


@pytest.fixture
def vms(tmp_path: Path, firecracker_binary: Path) -> Iterator[VMFactory]:
    initrd = tiny_initramfs(tmp_path / "initrd-build")
    factory = VMFactory(FirecrackerBackend(firecracker_binary), tmp_path, test_kernel(), initrd)
    try:
        yield factory
    finally:
        factory.cleanup()


def test_instance_starts_and_kernel_writes_the_console(vms: VMFactory) -> None:
    # loglevel after the backend's "quiet" wins: we want the kernel's first lines.
    handle = vms.spawn("fc-boot", cmdline_extra=("loglevel=7", "--", "hang"))
    assert vms.backend.is_alive(handle)
    info = vms.backend.api(handle, "GET", "/")  # type: ignore[attr-defined]
    assert info["state"] == "Running"
    wait_for_serial(vms.backend, handle, "Linux version", timeout=60)
    assert (handle.workdir / "rootfs.ext4").exists()
    vms.backend.kill(handle)
    assert_nothing_left(vms.backend, handle)


def test_long_workdir_path(vms: VMFactory) -> None:
    deep = vms.root / ("f" * 120) / ("g" * 120) / "vm"
    handle = vms.spawn("fc-long", workdir=deep, cmdline_extra=("--", "hang"))
    assert vms.backend.api(handle, "GET", "/")["state"] == "Running"  # type: ignore[attr-defined]
    vms.backend.stop(handle, timeout=1)
    assert_nothing_left(vms.backend, handle)


def test_probe_reports_no_exec_on_pvm(
    firecracker_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_FIRECRACKER", str(firecracker_binary))
    info = next(i for i in probe_backends() if i.name == "firecracker")
    assert info.version == "1.12.1"
    if detect_kvm() == "pvm":
        assert (info.usable, info.can_exec) == (False, False)
        assert "PVM" in info.reason
    else:
        assert info.can_exec == (detect_kvm() == "hardware")


def test_agent_unreachable_is_a_boot_error(vms: VMFactory) -> None:
    from pyro.errors import BootError

    # The test initrd has no agent (and on PVM no user space runs at all): Firecracker
    # accepts the vsock connection but the guest refuses port 1024.
    handle = vms.spawn("fc-noagent", cmdline_extra=("--", "hang"))
    with pytest.raises(BootError, match="did not accept vsock port 1024"):
        vms.backend.connect_agent(handle, timeout=1.0)
    assert vms.backend.is_alive(handle)
