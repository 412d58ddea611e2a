"""Saving and restoring a running QEMU guest (RAM + device state + disk) over QMP.

QEMU runs with ``-sandbox ...,spawn=deny``, so ``exec:`` migration URIs are forbidden.
The state goes through a file descriptor instead: the host opens the file, hands the fd
to QEMU over the QMP socket (SCM_RIGHTS + ``getfd``) and migrates to/from ``fd:NAME``
(QEMU 7.2 has no ``file:`` URI).

The guest RAM is not in the migration stream. The VM being saved runs with its RAM in a
memfd QEMU maps shared, and the ``x-ignore-shared`` capability makes QEMU skip shared RAM:
the stream holds only device state (tens of kB), and the save copies the memfd to a
sparse ``ram`` file. A restore maps that file privately (copy-on-write) with the same
capability, so loading the state is quick and the same every time, the guest faults in
only the pages it touches, and concurrent restores share one copy in the page cache.

The disk is saved with the RAM: the guest's page cache and the ext4 journal position in
RAM only make sense with the disk exactly as it was at the save, so a restored VM gets a
fresh overlay *backed by the saved disk* (itself backed by the environment's rootfs), not
a fresh overlay over the rootfs alone.

A task's pause (:mod:`pyro.tasks.pause`) is the same save without the disk copy and without
resuming; its resumed guest maps the saved RAM file shared (:attr:`VMConfig.memory_file`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyro.errors import VMMError
from pyro.vmm import launch
from pyro.vmm.base import VMHandle, vmm_process
from pyro.vmm.overlay import run_qemu_img
from pyro.vmm.sparse import copy_sparse

FD_NAME = "pyro-snapshot"
#: Leave shared RAM out of the stream: it is copied (save) or mapped (restore) as a file.
IGNORE_SHARED = [{"capability": "x-ignore-shared", "state": True}]
#: How long QEMU may take to open its QMP socket after start.
QMP_READY_S = 10.0


class _Qmp:
    """A minimal synchronous QMP client: one connection, commands answered in order.

    Synchronous and dependency-free on purpose: a warm start is a handful of commands, and
    ``qemu.qmp``'s asyncio machinery costs more to import and run than the load itself.
    """

    def __init__(self, sock: socket.socket, vm_id: str) -> None:
        self.sock = sock
        self.vm_id = vm_id
        self.buffer = b""
        self._message()  # the greeting
        self.command("qmp_capabilities")

    def _message(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise VMMError(f"QMP of VM {self.vm_id} closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise VMMError(f"QMP of VM {self.vm_id} sent garbage: {line[:80]!r}") from exc
        if not isinstance(message, dict):
            raise VMMError(f"QMP of VM {self.vm_id} sent garbage: {line[:80]!r}")
        return message

    def command(self, name: str, *, fd: int | None = None, **arguments: Any) -> Any:
        """Run ``name`` and return its result; ``fd`` travels with it (SCM_RIGHTS).

        Raises:
            VMMError: when QEMU answers with an error or the connection breaks.
        """
        request = json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n"
        if fd is None:
            self.sock.sendall(request)
        else:
            socket.send_fds(self.sock, [request], [fd])
        while True:
            reply = self._message()
            if "event" in reply:
                continue  # asynchronous notifications (STOP, RESUME, MIGRATION, ...)
            if "error" in reply:
                error = reply["error"]
                desc = error.get("desc", error) if isinstance(error, dict) else error
                raise VMMError(
                    f"QEMU refused {name!r} for VM {self.vm_id}: {desc}",
                    hint="the VMM may be too old for snapshots (QEMU 7.2 is known to work)",
                )
            return reply.get("return")


@contextlib.contextmanager
def _session(
    handle: VMHandle, qmp_sock: str, *, wait: float = 0.0, timeout: float = 30.0
) -> Iterator[_Qmp]:
    """One QMP connection (fds passed with getfd belong to the connection that sent them).

    Waits up to ``wait`` seconds for QEMU to open its socket; each reply may take
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            sock = launch.connect_unix(handle.workdir, qmp_sock, timeout=timeout)
            break
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if vmm_process(handle) is None or time.monotonic() >= deadline:
                raise VMMError(
                    f"QMP of VM {handle.vm_id} is not reachable: {exc}",
                    hint="the VMM exited; see its vmm.log",
                ) from exc
            time.sleep(0.002)
        except OSError as exc:
            raise VMMError(f"cannot connect to QMP of VM {handle.vm_id}: {exc}") from exc
    try:
        yield _Qmp(sock, handle.vm_id)
    except OSError as exc:  # includes socket timeouts
        raise VMMError(f"QMP failed for VM {handle.vm_id}: {exc}") from exc
    finally:
        sock.close()


def save_state(
    handle: VMHandle,
    state: Path,
    ram: Path,
    disk: Path | None,
    *,
    overlay_name: str,
    qmp_sock: str,
    timeout: float,
    keep_running: bool = True,
) -> None:
    """Stop the guest, migrate its device state into ``state``, copy its RAM to ``ram``
    and its disk to ``disk`` (unless None), resume (unless ``keep_running`` is false: a
    pause, whose caller ends the VMM). The VM must run with ``VMConfig.shared_ram`` or
    ``VMConfig.ram_file``; a RAM file that already is ``ram`` is not copied.

    Raises:
        VMMError: when QEMU refuses, the migration fails or does not finish in ``timeout``,
            or the guest RAM cannot be copied.
    """
    deadline = time.monotonic() + timeout
    ram_fd = _guest_ram(handle)
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, ram_fd)
        qmp = stack.enter_context(_session(handle, qmp_sock))
        qmp.command("stop")
        if keep_running:  # the first run goes on with its command either way
            stack.callback(qmp.command, "cont")
        qmp.command("migrate-set-capabilities", capabilities=IGNORE_SHARED)
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            qmp.command("getfd", fd=fd, fdname=FD_NAME)
        finally:
            os.close(fd)  # QEMU holds its own copy now
        qmp.command("migrate", uri=f"fd:{FD_NAME}")
        _wait_migration(qmp, handle, deadline)
        # Migration completion flushed and released the disk; copy RAM and disk before the
        # guest writes again. The disk copy keeps its backing file reference (the rootfs).
        try:
            if not _same_file(ram_fd, ram):
                copy_sparse(ram_fd, ram, os.fstat(ram_fd).st_size)
            if disk is not None:
                shutil.copyfile(handle.workdir / overlay_name, disk)
        except OSError as exc:
            raise VMMError(f"cannot copy the RAM or disk of VM {handle.vm_id}: {exc}") from exc


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except OSError:
        return False


def _guest_ram(handle: VMHandle) -> int:
    """A read-only fd of the guest RAM of ``handle``'s QEMU: its RAM file (a resumed task,
    ``handle.extra["ram_file"]``) or else the memfd holding it.

    Raises:
        VMMError: when QEMU has neither (it was started without ``shared_ram``).
    """
    ram_file = handle.extra.get("ram_file")
    if ram_file:
        try:
            return os.open(handle.workdir / ram_file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise VMMError(f"cannot open the RAM file of VM {handle.vm_id}: {exc}") from exc
    fds = Path(f"/proc/{handle.pid}/fd")
    try:
        entries = list(fds.iterdir())
    except OSError as exc:
        raise VMMError(f"cannot list the files of VM {handle.vm_id}'s VMM: {exc}") from exc
    found: list[tuple[int, int]] = []  # (size, fd): the guest RAM is the largest memfd
    for entry in entries:
        with contextlib.suppress(OSError):
            if os.readlink(entry).startswith("/memfd:"):
                fd = os.open(entry, os.O_RDONLY | os.O_CLOEXEC)
                found.append((os.fstat(fd).st_size, fd))
    if found:
        found.sort()
        for _, fd in found[:-1]:
            os.close(fd)
        return found[-1][1]
    raise VMMError(
        f"VM {handle.vm_id} has no shared guest RAM to save",
        hint="only a VM started with shared_ram can be saved",
    )


def _wait_migration(qmp: _Qmp, handle: VMHandle, deadline: float) -> None:
    while True:
        info = qmp.command("query-migrate") or {}
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
                qmp.command("migrate_cancel")
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
        with _session(handle, qmp_sock, wait=QMP_READY_S) as qmp:
            qmp.command("getfd", fd=fd, fdname=FD_NAME)
            qmp.command("migrate-set-capabilities", capabilities=IGNORE_SHARED)
            qmp.command("migrate-incoming", uri=f"fd:{FD_NAME}")
            while (qmp.command("query-status") or {}).get("status") == "inmigrate":
                if time.monotonic() >= deadline:
                    raise VMMError(f"VM {handle.vm_id}: loading the saved state timed out")
                time.sleep(0.002)
            qmp.command("cont")
    finally:
        os.close(fd)


def make_overlay_template(disk: Path, backing: Path, dest: Path) -> None:
    """Create ``dest``: an empty qcow2 over ``disk`` that names ``backing`` (where ``disk``
    will live once published) as its backing file. Restores copy it instead of running
    qemu-img.

    Raises:
        VMMError: when qemu-img is missing or fails.
    """
    restore_overlay(disk, dest)
    run_qemu_img("rebase", "-q", "-u", "-F", "qcow2", "-b", str(backing.absolute()), str(dest))


def restore_overlay(disk: Path, dest: Path) -> None:
    """Create ``dest`` as a qcow2 overlay backed by the saved qcow2 ``disk``.

    Raises:
        VMMError: when qemu-img is missing or fails.
    """
    run_qemu_img(
        "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk.absolute()), str(dest)
    )
