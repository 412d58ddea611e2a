"""Driving any VMM backend through the :class:`pyro.vmm.Backend` protocol in tests.

* ``test_kernel()`` — the guest kernel: ``$PYRO_TEST_KERNEL``, else the kernel of the
  installed debian:12 environment (``make environments`` installs it).
* ``tiny_initramfs(dir)`` — an initramfs whose static ``/init`` prints ``INIT_LINE`` to the
  console, then reboots (QEMU ``-no-reboot`` exits); given ``-- hang`` on the kernel
  command line it waits forever, given ``-- flood`` it writes to the console forever.
* ``VMFactory`` — owns every VM a test makes; ``cleanup()`` kills them idempotently and
  asserts that no VMM process, socket or disk is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pyro.vmm import Backend, VMConfig, VMHandle

INIT_LINE = "PYRO-TEST-INIT hello"
SOCKETS = ("agent.sock", "qmp.sock", "fc.sock", "vsock.sock")
DISKS = ("overlay.qcow2", "rootfs.ext4")

INIT_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/reboot.h>
int main(int argc, char **argv) {
    static const char line[] = "PYRO-TEST-INIT hello\n";
    int fd = open("/dev/console", O_WRONLY);
    write(fd >= 0 ? fd : 1, line, sizeof line - 1);
    if (argc > 1 && strcmp(argv[1], "hang") == 0)
        for (;;) pause();
    if (argc > 1 && strcmp(argv[1], "flood") == 0) {  /* a guest spamming its console */
        static char chunk[4096];
        memset(chunk, 'x', sizeof chunk - 1);
        chunk[sizeof chunk - 1] = '\n';
        for (;;) write(fd, chunk, sizeof chunk);
    }
    sync();
    reboot(RB_AUTOBOOT);  /* microvm without ACPI cannot power off; -no-reboot exits */
    for (;;) pause();
}
"""


def test_kernel() -> Path:
    """The guest kernel for VM tests; skips when there is none."""
    if os.environ.get("PYRO_TEST_KERNEL"):
        kernel = Path(os.environ["PYRO_TEST_KERNEL"])
        if not kernel.is_file():
            pytest.skip(f"PYRO_TEST_KERNEL names no file: {kernel}")
        return kernel
    from pyro.environments.cache.store import Cache

    install = Cache().lookup("debian:12")
    if install is None or not Path(install.kernel).is_file():
        pytest.skip("no guest kernel: run 'make environments' or set PYRO_TEST_KERNEL")
    return Path(install.kernel)


def tiny_initramfs(directory: Path) -> Path:
    """Build the test initramfs in ``directory``; skips without musl-gcc or cpio."""
    for tool in ("musl-gcc", "cpio"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install musl-tools cpio)")
    root = directory / "initramfs"
    (root / "dev").mkdir(parents=True, exist_ok=True)
    source = directory / "init.c"
    source.write_text(INIT_C)
    subprocess.run(
        ["musl-gcc", "-static", "-Os", "-o", str(root / "init"), str(source)], check=True
    )
    names = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    archive = directory / "init.cpio"
    with archive.open("wb") as out:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=names, stdout=out, check=True
        )
    return archive


test_kernel.__test__ = False  # type: ignore[attr-defined]


def base_disk(directory: Path, size_mib: int = 16) -> Path:
    """A sparse raw disk standing in for a cached base rootfs."""
    disk = directory / "base.ext4"
    with disk.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    return disk


def wait_for_serial(backend: Backend, handle: VMHandle, text: str, timeout: float) -> str:
    """Wait until ``text`` is in the serial log; return the log. Fails on timeout."""
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        path = backend.serial_log(handle)
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        time.sleep(0.02)
    pytest.fail(f"{text!r} not in serial log after {timeout} s; log tail:\n{log[-2000:]}")


def wait_gone(pid: int, timeout: float) -> bool:
    """True when no process ``pid`` exists (or only a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


class VMFactory:
    """Makes VMs for one test and guarantees they are all gone afterwards."""

    def __init__(self, backend: Backend, root: Path, kernel: Path, initrd: Path) -> None:
        self.backend = backend
        self.root = root
        self.kernel = kernel
        self.initrd = initrd
        self.rootfs = base_disk(root)
        self.handles: list[VMHandle] = []

    def config(self, vm_id: str, **changes: object) -> VMConfig:
        fields: dict[str, object] = {
            "vm_id": vm_id,
            "workdir": self.root / "vms" / vm_id,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "rootfs": self.rootfs,
            "vcpus": 1,
            "memory_mib": 128,
        }
        fields.update(changes)
        return VMConfig(**fields)  # type: ignore[arg-type]

    def spawn(self, vm_id: str, **changes: object) -> VMHandle:
        handle = self.backend.spawn(self.config(vm_id, **changes))
        self.handles.append(handle)
        return handle

    def cleanup(self) -> None:
        base_before = self.rootfs.stat().st_size
        for handle in self.handles:
            self.backend.kill(handle)
            self.backend.kill(handle)  # idempotent
            assert_nothing_left(self.backend, handle)
            for name in DISKS:
                (handle.workdir / name).unlink(missing_ok=True)
        assert self.rootfs.stat().st_size == base_before


def assert_nothing_left(backend: Backend, handle: VMHandle) -> None:
    """No VMM process or socket remains for ``handle``, nor the disk of an ephemeral VM.

    A persistent VM's disk stays for its next spawn; the factory removes it in cleanup.
    """
    from pyro.vmm.base import console_process

    assert not backend.is_alive(handle)
    assert wait_gone(handle.pid, 5.0), f"VMM pid {handle.pid} still running"
    assert console_process(handle) is None, "the console keeper outlived its VMM"
    names = SOCKETS + (DISKS if handle.ephemeral else ())
    left = [name for name in names if (handle.workdir / name).exists()]
    assert not left, f"left behind in {handle.workdir}: {left}"
