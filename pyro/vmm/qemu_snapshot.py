"""Saving and restoring a running QEMU guest (RAM + device state + disk) over QMP.

QEMU runs with ``-sandbox ...,spawn=deny``, so ``exec:`` migration URIs are forbidden.
The state goes through a file descriptor instead: the host opens the file, hands the fd
to QEMU over the QMP socket (SCM_RIGHTS + ``getfd``) and migrates to/from ``fd:NAME``
(QEMU 7.2 has no ``file:`` URI).

The disk is saved with the RAM: the guest's page cache and the ext4 journal position in
RAM only make sense with the disk exactly as it was at the save, so a restored VM gets a
fresh overlay *backed by the saved disk* (itself backed by the environment's rootfs), not
a fresh overlay over the rootfs alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyro.errors import VMMError
from pyro.vmm import launch
from pyro.vmm.base import VMHandle, vmm_process

FD_NAME = "pyro-snapshot"
#: How long QEMU may take to open its QMP socket after start.
QMP_READY_S = 10.0


@contextlib.contextmanager
def _session(handle: VMHandle, qmp_sock: str, *, wait: float = 0.0) -> Iterator[Any]:
    """One QMP connection (fds passed with getfd belong to the connection that sent them)."""
    from qemu.qmp import QMPError
    from qemu.qmp.legacy import QEMUMonitorProtocol

    deadline = time.monotonic() + wait
    with launch.short_dir(handle.workdir) as short:
        # Wait for QEMU to create the socket first: qemu.qmp logs every failed connect.
        while not os.path.exists(f"{short}/{qmp_sock}") and time.monotonic() < deadline:
            if vmm_process(handle) is None:
                break
            time.sleep(0.002)
        while True:
            monitor = QEMUMonitorProtocol(f"{short}/{qmp_sock}")
            try:
                monitor.connect()
                break
            except (OSError, QMPError) as exc:
                monitor.close()
                if vmm_process(handle) is None or time.monotonic() >= deadline:
                    raise VMMError(
                        f"QMP of VM {handle.vm_id} is not reachable: {exc}",
                        hint="the VMM exited; see its vmm.log",
                    ) from exc
                time.sleep(0.005)
        try:
            yield monitor
        except (OSError, EOFError, QMPError) as exc:
            raise VMMError(f"QMP failed for VM {handle.vm_id}: {exc}") from exc
        finally:
            monitor.close()


def _command(monitor: Any, command: str, **arguments: Any) -> Any:
    reply = monitor.cmd_raw(command, arguments or None)
    if "error" in reply:
        raise VMMError(
            f"QEMU refused {command!r}: {reply['error'].get('desc', reply['error'])}",
            hint="the VMM may be too old for snapshots (QEMU 7.2 is known to work)",
        )
    return reply.get("return")


def _pass_fd(monitor: Any, fd: int) -> None:
    monitor.send_fd_scm(fd)
    _command(monitor, "getfd", fdname=FD_NAME)


def save_state(
    handle: VMHandle, state: Path, disk: Path, *, overlay_name: str, qmp_sock: str, timeout: float
) -> None:
    """Stop the guest, migrate its state into ``state``, copy its disk to ``disk``, resume.

    Raises:
        VMMError: when QEMU refuses, the migration fails or does not finish in ``timeout``.
    """
    deadline = time.monotonic() + timeout
    with _session(handle, qmp_sock) as monitor:
        _command(monitor, "stop")
        try:
            fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _pass_fd(monitor, fd)
            finally:
                os.close(fd)  # QEMU holds its own copy now
            _command(monitor, "migrate", uri=f"fd:{FD_NAME}")
            _wait_migration(monitor, handle, deadline)
            # Migration completion flushed and released the disk; copy it before the guest
            # writes again. The copy keeps its backing file reference (the base rootfs).
            try:
                shutil.copyfile(handle.workdir / overlay_name, disk)
            except OSError as exc:
                raise VMMError(f"cannot copy the disk of VM {handle.vm_id}: {exc}") from exc
        finally:
            # The first run goes on with its command either way.
            _command(monitor, "cont")


def _wait_migration(monitor: Any, handle: VMHandle, deadline: float) -> None:
    while True:
        info = _command(monitor, "query-migrate") or {}
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise VMMError(
                f"saving VM {handle.vm_id} failed: {info.get('error-desc', status)}",
                hint="see the VM's vmm.log",
            )
        if time.monotonic() >= deadline:
            with contextlib.suppress(VMMError):
                _command(monitor, "migrate_cancel")
            raise VMMError(f"saving VM {handle.vm_id} did not finish in time")
        time.sleep(0.005)


def feed_state(handle: VMHandle, state: Path, *, qmp_sock: str, timeout: float) -> None:
    """Load ``state`` into a QEMU started with ``-incoming defer`` and resume the guest.

    The guest was saved paused, and QEMU carries that run state over: it stays paused
    after the load until ``cont``.

    Raises:
        VMMError: when QMP is unreachable, QEMU refuses or fails the load, or the load
            does not finish within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    try:
        fd = os.open(state, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VMMError(f"cannot open the saved VM state {state}: {exc.strerror}") from exc
    try:
        with _session(handle, qmp_sock, wait=QMP_READY_S) as monitor:
            _pass_fd(monitor, fd)
            _command(monitor, "migrate-incoming", uri=f"fd:{FD_NAME}")
            while (_command(monitor, "query-status") or {}).get("status") == "inmigrate":
                if time.monotonic() >= deadline:
                    raise VMMError(f"VM {handle.vm_id}: loading the saved state timed out")
                time.sleep(0.002)
            _command(monitor, "cont")
    finally:
        os.close(fd)


def restore_overlay(disk: Path, dest: Path) -> None:
    """Create ``dest`` as a qcow2 overlay backed by the saved qcow2 ``disk``.

    Raises:
        VMMError: when qemu-img is missing or fails.
    """
    exe = shutil.which("qemu-img")
    if exe is None:
        raise VMMError("qemu-img is not installed", hint="apt-get install qemu-utils")
    backing = str(disk.absolute())
    argv = [exe, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, str(dest)]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    except subprocess.CalledProcessError as exc:
        lines = exc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VMMError(
            f"qemu-img could not create {dest}: {lines[-1] if lines else exc}",
            hint="check free disk space in the VM's state directory",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise VMMError(f"qemu-img timed out creating {dest}") from exc
