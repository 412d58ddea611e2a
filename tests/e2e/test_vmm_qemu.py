"""The QEMU microvm backend against a real QEMU and a real guest kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.vmm import BACKENDS, VMHandle
from tests.helpers.vmm import (
    INIT_LINE,
    VMFactory,
    assert_nothing_left,
    test_kernel,
    tiny_initramfs,
    wait_for_serial,
    wait_gone,
)

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(
        not any(
            os.access(os.path.join(d, "qemu-system-x86_64"), os.X_OK)
            for d in os.environ.get("PATH", "").split(os.pathsep)
        ),
        reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    ),
]


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_initramfs(tmp_path_factory.mktemp("initrd"))


@pytest.fixture
def vms(tmp_path: Path, initrd: Path) -> Iterator[VMFactory]:
    factory = VMFactory(BACKENDS["qemu-tcg"], tmp_path, test_kernel(), initrd)
    try:
        yield factory
    finally:
        factory.cleanup()


def test_guest_prints_and_qemu_exits(vms: VMFactory) -> None:
    handle = vms.spawn("boot1")
    log = wait_for_serial(vms.backend, handle, INIT_LINE, timeout=60)
    assert wait_gone(handle.pid, 30), "QEMU did not exit after the guest rebooted"
    assert not vms.backend.is_alive(handle)
    assert INIT_LINE in log


def test_agent_socket_connects_with_a_long_workdir(vms: VMFactory) -> None:
    deep = vms.root / ("d" * 120) / ("e" * 120)
    handle = vms.spawn("longpath", workdir=deep / "vm", cmdline_extra=("--", "hang"))
    assert len(str(handle.workdir / "agent.sock")) > 107
    sock = vms.backend.connect_agent(handle, timeout=30)
    try:
        assert sock.getpeername()  # connected to QEMU's virtserialport chardev
    finally:
        sock.close()
    wait_for_serial(vms.backend, handle, INIT_LINE, timeout=60)
    assert vms.backend.is_alive(handle)


def test_stop_quits_over_qmp_and_cleans_up(vms: VMFactory) -> None:
    handle = vms.spawn("stopme", cmdline_extra=("--", "hang"))
    wait_for_serial(vms.backend, handle, INIT_LINE, timeout=60)
    assert vms.backend.qmp(handle, "query-status")["status"] == "running"  # type: ignore[attr-defined]
    vms.backend.stop(handle, timeout=10)
    assert_nothing_left(vms.backend, handle)


def test_handle_round_trips_and_reattaches(vms: VMFactory) -> None:
    handle = vms.spawn("reattach", cmdline_extra=("--", "hang"), ephemeral=False)
    again = VMHandle.from_dict(json.loads(json.dumps(handle.to_dict())))
    assert again == handle
    assert vms.backend.is_alive(again)
    vms.backend.kill(again)
    assert_nothing_left(vms.backend, handle)
    overlay = handle.workdir / "overlay.qcow2"
    assert overlay.is_file()  # a persistent VM keeps its disk for the next start
    inode = overlay.stat().st_ino
    restarted = vms.spawn("reattach", ephemeral=False)
    wait_for_serial(vms.backend, restarted, INIT_LINE, timeout=60)
    assert overlay.stat().st_ino == inode


def test_reused_pid_is_not_killed(vms: VMFactory) -> None:
    handle = vms.spawn("pidreuse", cmdline_extra=("--", "hang"))
    other = subprocess.Popen(["sleep", "30"])
    try:
        # A handle whose PID now belongs to an unrelated process must not touch it.
        impostor = VMHandle.from_dict({**handle.to_dict(), "pid": other.pid})
        assert not vms.backend.is_alive(impostor)
        vms.backend.kill(impostor)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert vms.backend.is_alive(handle)


CHILD = """
import json, sys, time
from pathlib import Path
from pyro.vmm import BACKENDS, VMConfig
args = json.loads(sys.argv[1])
config = VMConfig(vm_id="orphan", workdir=Path(args["workdir"]), kernel=Path(args["kernel"]),
                  initrd=Path(args["initrd"]), rootfs=Path(args["rootfs"]), vcpus=1,
                  memory_mib=128, cmdline_extra=("--", "hang"), ephemeral=args["ephemeral"])
handle = BACKENDS["qemu-tcg"].spawn(config)
print(json.dumps(handle.to_dict()), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("ephemeral", [True, False])
def test_vmm_lifetime_follows_ephemeral_flag(vms: VMFactory, ephemeral: bool) -> None:
    args = {
        "workdir": str(vms.root / "vms" / "orphan"),
        "kernel": str(vms.kernel),
        "initrd": str(vms.initrd),
        "rootfs": str(vms.rootfs),
        "ephemeral": ephemeral,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        handle = VMHandle.from_dict(json.loads(child.stdout.readline()))
        vms.handles.append(handle)
        wait_for_serial(vms.backend, handle, INIT_LINE, timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    if ephemeral:
        assert wait_gone(handle.pid, 10), "ephemeral QEMU survived its parent's SIGKILL"
    else:
        assert not wait_gone(handle.pid, 1), "persistent QEMU died with its parent"
        assert vms.backend.is_alive(handle)


@pytest.mark.hostile
def test_flooding_guest_keeps_a_bounded_serial_log(
    vms: VMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded while the guest writes, with no pyro call in between (nothing polls)."""
    import re

    cap = 64 * 1024
    monkeypatch.setenv("PYRO_SERIAL_LOG_MAX_BYTES", str(cap))
    handle = vms.spawn("flood", cmdline_extra=("--", "flood"))
    log = vms.backend.serial_log(handle)
    dropped = 0
    deadline = time.monotonic() + 120
    # Only look at the file: the keeper's marker line counts what it dropped so far.
    while dropped < 20 * cap:
        assert time.monotonic() < deadline, f"the guest flooded only {dropped} bytes"
        data = log.read_bytes() if log.exists() else b""
        assert len(data) <= cap
        counts = re.findall(rb"serial log trimmed, (\d+) bytes", data)
        dropped = int(counts[-1]) if counts else 0
        time.sleep(0.05)
    vms.backend.kill(handle)
    data = log.read_bytes()
    assert len(data) <= cap
    assert INIT_LINE.encode() in data[:4096]  # the boot is kept
    assert data.rstrip(b"x\n") != data  # the latest flood is kept


def test_ephemeral_vm_outlives_the_thread_that_spawned_it(vms: VMFactory) -> None:
    # PR_SET_PDEATHSIG is per forking thread: the backend must not tie the VM to it.
    handles: list[VMHandle] = []
    worker = threading.Thread(
        target=lambda: handles.append(vms.spawn("thread", cmdline_extra=("--", "hang")))
    )
    worker.start()
    worker.join()
    (handle,) = handles
    wait_for_serial(vms.backend, handle, INIT_LINE, timeout=60)
    assert vms.backend.is_alive(handle)
