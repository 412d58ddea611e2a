"""QEMU ``microvm`` backend: TCG (works everywhere) or KVM (hardware virtualization only).

Layout of a VM's workdir (QEMU runs with ``cwd=workdir``; every path it gets is relative,
so socket names stay short whatever the workdir's length):

``overlay.qcow2``  copy-on-write disk over the cached base rootfs
``agent.sock``     virtserialport ``org.pyro.agent`` (QEMU listens, the host connects)
``qmp.sock``       QMP control socket (quit; later stop/cont/migrate for snapshots)
``serial.log``     guest console (ttyS0): QEMU's stdout, through the console keeper that
                   keeps it bounded (see launch.py, console.py)
``vmm.log``        QEMU's own messages (stderr)
``vmm.pid``        QEMU's pidfile
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pyro import paths
from pyro.errors import BootError, VMMError
from pyro.net.policy import NetworkConfig
from pyro.net.ports import check_ports_free
from pyro.net.slirp import slirp_setup
from pyro.plan.inventory import BackendInfo
from pyro.vmm import launch, overlay
from pyro.vmm.base import (
    SERIAL_LOG,
    VMConfig,
    VMHandle,
    console_extra,
    finish_console,
    kill_vmm,
    now,
    process_start,
    remove_files,
    vmm_process,
    wait_exit,
)

QEMU_BINARY = "qemu-system-x86_64"
OVERLAY = "overlay.qcow2"
AGENT_SOCK = "agent.sock"
QMP_SOCK = "qmp.sock"
VMM_LOG = "vmm.log"
PIDFILE = "vmm.pid"
AGENT_PORT_NAME = "org.pyro.agent"
#: How the guest tells the data disk (:attr:`VMConfig.data_disk`) from its root disk.
DATA_DISK_SERIAL = "pyro-data"
#: How the guest tells the spare disk (:attr:`VMConfig.spare_disk`) from the others.
SPARE_DISK_SERIAL = "pyro-push"
#: QMP node names of the spare disk: the raw format node the device reads, its
#: placeholder file, and the image swapped in.
_SPARE, _SPARE_EMPTY, _SPARE_IMAGE = "spare", "spare-empty", "spare-image"
#: ``quiet``: every console line is an emulated UART write, a noticeable share of a TCG boot
#: (docs/performance.md).
BASE_CMDLINE = ("console=ttyS0", "reboot=t", "panic=-1", "quiet")
#: Accepted by Debian's QEMU 7.2. ``spawn=deny`` forbids fork/exec inside QEMU, so
#: snapshots must migrate to an ``fd:`` passed over QMP, not to ``exec:cat > FILE``.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
#: An allowlist's guestfwd rules fork and exec a relay per connection (glib calls setsid
#: in the child): that needs spawn and elevateprivileges allowed (docs/networking.md).
SANDBOX_RELAY = "on,obsolete=deny,resourcecontrol=deny"


def build_argv(
    config: VMConfig,
    *,
    accel: Literal["tcg", "kvm"],
    binary: str,
    ram_file: Path | None = None,
) -> list[str]:
    """The QEMU command line for ``config``; all paths relative to the VM's workdir.

    Guest RAM is anonymous memory, except for a boot that will be saved
    (``config.shared_ram``: a memfd, copied out by the save) and a restore (``ram_file``:
    the saved RAM mapped copy-on-write, so the guest faults in only the pages it touches
    and concurrent restores share the host's page cache of one file).

    Raises:
        NetworkError: when ``config.network`` cannot be expressed (see pyro.net.slirp).
    """
    net = slirp_setup(config.network or NetworkConfig(), vm_id=config.vm_id)
    machine = "microvm,acpi=off,x-option-roms=off,isa-serial=on"
    # The overlay is thrown away with an ephemeral VM, so skipping flushes (cache=unsafe)
    # only risks data nobody keeps; a persistent VM's disk must survive a host crash.
    cache = "unsafe" if config.ephemeral else "writeback"
    cmdline = " ".join((*BASE_CMDLINE, *config.cmdline_extra, *net.cmdline))
    argv = [
        binary,
        "-name", f"pyro-{config.vm_id}",
        "-M", machine,
        "-accel", "tcg,tb-size=32" if accel == "tcg" else "kvm",
        "-cpu", "max" if accel == "tcg" else "host",
        "-smp", str(config.vcpus),
        "-m", str(config.memory_mib),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-sandbox", SANDBOX_RELAY if net.needs_spawn else SANDBOX,
        "-kernel", str(config.kernel.absolute()),
        "-initrd", str(config.initrd.absolute()),
        "-append", cmdline,
        # stdout: a pipe to the console keeper, which bounds serial.log (launch.py).
        "-chardev", "stdio,id=serial0,signal=off",
        "-serial", "chardev:serial0",
        "-drive", f"id=root,if=none,file={OVERLAY},format=qcow2,discard=unmap,cache={cache}",
        "-device", "virtio-blk-device,drive=root",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={AGENT_SOCK},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT_NAME}",
        "-qmp", f"unix:{QMP_SOCK},server=on,wait=off",
        "-pidfile", PIDFILE,
        *net.argv,
    ]  # fmt: skip
    if config.data_disk is not None:
        # After the root disk, so the root stays /dev/vda; the guest finds this one by serial.
        argv += [
            "-drive", f"id=data,if=none,file={_escaped(config.data_disk)},format=raw,cache={cache}",
            "-device", f"virtio-blk-device,drive=data,serial={DATA_DISK_SERIAL}",
        ]  # fmt: skip
    if config.spare_disk is not None:
        # Named nodes, writable (block_resize, which tells the guest the new capacity,
        # refuses a read-only node); the placeholder is empty, so nothing can be written.
        empty = _escaped(config.spare_disk)
        argv += [
            "-blockdev", f"driver=file,node-name={_SPARE_EMPTY},filename={empty},cache.no-flush=on",
            "-blockdev", f"driver=raw,node-name={_SPARE},file={_SPARE_EMPTY}",
            "-device", f"virtio-blk-device,drive={_SPARE},serial={SPARE_DISK_SERIAL}",
        ]  # fmt: skip
    size = f"size={config.memory_mib}M"
    if config.memory_file is not None:
        mem_path = _escaped(config.workdir / config.memory_file)
        memory = f"memory-backend-file,id=ram0,{size},mem-path={mem_path},share=on"
    elif ram_file is not None:
        memory = f"memory-backend-file,id=ram0,{size},mem-path={ram_file.absolute()},share=off"
    elif config.shared_ram:
        memory = f"memory-backend-memfd,id=ram0,{size},share=on"
    else:
        return argv
    argv[argv.index("-M") + 1] += ",memory-backend=ram0"
    return [*argv, "-object", memory]


class QemuBackend:
    """Runs each VM in its own ``qemu-system-x86_64 -M microvm`` process."""

    def __init__(self, accel: Literal["tcg", "kvm"], *, binary: str = QEMU_BINARY) -> None:
        self.accel: Literal["tcg", "kvm"] = accel
        self.name = f"qemu-{accel}"
        self.binary = binary

    def probe(self) -> BackendInfo:
        """This backend's entry from :func:`pyro.vmm.probe.probe_backends`."""
        from pyro.vmm.probe import probe_backends

        return next(info for info in probe_backends() if info.name == self.name)

    def spawn(self, config: VMConfig) -> VMHandle:
        """Create the qcow2 overlay and start QEMU; returns while the guest boots.

        Raises:
            VMMError: when the overlay cannot be made or QEMU exits at once.
            NetworkError: when a published host port is taken (checked before QEMU starts).
        """
        argv = build_argv(config, accel=self.accel, binary=self.binary)
        if config.network is not None:
            check_ports_free(host for host, _ in config.network.publish)
        workdir = paths.private_dir(config.workdir)
        remove_files(workdir, (AGENT_SOCK, QMP_SOCK, PIDFILE))
        # A persistent VM (a task, a kept VM) boots again from its own disk after a stop.
        if config.ephemeral or not (workdir / OVERLAY).is_file():
            overlay.create_qcow2_overlay(config.rootfs, workdir / OVERLAY)
        return self._launch(config, argv)

    def _launch(self, config: VMConfig, argv: list[str]) -> VMHandle:
        """Start QEMU in the VM's workdir and describe it as a handle."""
        paths.private_file(config.workdir / OVERLAY)  # qemu-img makes it 0644
        started = launch.start_process(
            argv,
            workdir=config.workdir,
            ephemeral=config.ephemeral,
            log_path=config.workdir / VMM_LOG,
            console_log=config.workdir / SERIAL_LOG,
        )
        extra = console_extra(started.console)
        if any("guestfwd=" in arg for arg in argv):
            extra["relays"] = "1"  # kill() looks for allowlist relays left behind
        return VMHandle(
            vm_id=config.vm_id,
            backend=self.name,
            pid=started.vmm.pid,
            workdir=config.workdir,
            agent_endpoint=AGENT_SOCK,
            started_at=now(),
            start_ticks=process_start(started.vmm.pid),
            ephemeral=config.ephemeral,
            extra=extra,
        )

    def connect_agent(self, handle: VMHandle, *, timeout: float) -> socket.socket:
        """Connect to the agent's virtserialport socket, waiting for QEMU to create it.

        The connection succeeds as soon as QEMU listens, before the guest opens its port;
        bytes the host sends wait in QEMU until the agent reads them.

        Raises:
            BootError: when QEMU exits or the socket does not accept within ``timeout``.
        """
        return _connect_retrying(handle, handle.agent_endpoint, timeout=timeout)

    def qmp(self, handle: VMHandle, command: str, **arguments: Any) -> Any:
        """Run one QMP command on the VM and return its result.

        Raises:
            VMMError: when QMP cannot be reached or the command fails.
        """
        from qemu.qmp import QMPError
        from qemu.qmp.legacy import QEMUMonitorProtocol

        try:
            with launch.short_dir(handle.workdir) as short:
                monitor = QEMUMonitorProtocol(f"{short}/{QMP_SOCK}")
                try:
                    monitor.connect()
                    return monitor.cmd(command, **arguments)
                finally:
                    monitor.close()
        except EOFError as exc:
            if command == "quit":  # QEMU may close the socket before its reply arrives
                return None
            raise VMMError(f"QMP closed during {command!r} for VM {handle.vm_id}") from exc
        except (OSError, QMPError) as exc:
            raise VMMError(
                f"QMP command {command!r} failed for VM {handle.vm_id}: {exc}",
                hint="the VM may have exited; check 'pyro vm status ID'",
            ) from exc

    def swap_spare(self, handle: VMHandle, image: Path | None) -> None:
        """Give the running VM's spare disk ``image`` as its medium, or its empty
        placeholder back (None). The guest sees a capacity change; it must not have the
        disk mounted when the medium goes.

        Raises:
            VMMError: QEMU refused (the VM has no spare disk, or the image cannot be opened).
        """
        nodes = {node["node-name"] for node in self.qmp(handle, "query-named-block-nodes")}
        if _SPARE not in nodes:
            raise VMMError(f"VM {handle.vm_id} has no spare disk")
        if image is not None:
            if _SPARE_IMAGE in nodes:  # left by a swap that did not finish
                self.swap_spare(handle, None)
            options = {"node-name": _SPARE_IMAGE, "filename": str(image.absolute())}
            self.qmp(handle, "blockdev-add", driver="file", **options)
        child = _SPARE_EMPTY if image is None else _SPARE_IMAGE
        raw = {"driver": "raw", "node-name": _SPARE, "file": child}
        self.qmp(handle, "blockdev-reopen", options=[raw])
        size = 0 if image is None else image.stat().st_size
        # Same size as the file: nothing is truncated, but the device tells the guest.
        self.qmp(handle, "block_resize", **{"node-name": _SPARE}, size=size)
        if image is None and _SPARE_IMAGE in nodes:
            self.qmp(handle, "blockdev-del", **{"node-name": _SPARE_IMAGE})

    # -- snapshots (pyro.vmm.snapshot decides when; these only move the bytes) -------------

    def save_state(
        self, handle: VMHandle, state: Path, ram: Path, disk: Path, *, timeout: float
    ) -> None:
        """Pause the guest (started with ``shared_ram``), write its device state to
        ``state``, its RAM to ``ram`` and its disk at that instant to ``disk``, then let it
        run on. See :mod:`pyro.vmm.qemu_snapshot`.

        Raises:
            VMMError: when QEMU refuses or the migration fails or times out.
        """
        from pyro.vmm.qemu_snapshot import save_state

        save_state(
            handle, state, ram, disk, overlay_name=OVERLAY, qmp_sock=QMP_SOCK, timeout=timeout
        )

    def restore(
        self,
        config: VMConfig,
        state: Path,
        ram: Path,
        disk: Path,
        *,
        timeout: float = 30.0,
        overlay_template: Path | None = None,
        before_load: Callable[[], object] | None = None,
    ) -> VMHandle:
        """Start QEMU with ``-incoming defer`` over a fresh overlay backed by ``disk``, the
        saved ``ram`` mapped copy-on-write, and feed it ``state``; the guest runs on from
        the save as soon as the state is loaded.
        ``overlay_template`` (an empty qcow2 over ``disk``) is copied instead of running
        qemu-img when given. ``before_load`` runs once QEMU is started, before it gets the
        state; if it raises, QEMU is killed and the exception propagates.

        Raises:
            VMMError: when the overlay cannot be made, QEMU exits or refuses the state.
        """
        from pyro.vmm.qemu_snapshot import feed_state, restore_overlay

        workdir = paths.private_dir(config.workdir)
        remove_files(workdir, (AGENT_SOCK, QMP_SOCK, PIDFILE, OVERLAY))
        if overlay_template is None:
            restore_overlay(disk, workdir / OVERLAY)
        else:
            try:
                shutil.copyfile(overlay_template, workdir / OVERLAY)
            except OSError as exc:
                raise VMMError(f"cannot copy the overlay for VM {config.vm_id}: {exc}") from exc
        argv = build_argv(config, accel=self.accel, binary=self.binary, ram_file=ram)
        argv += ["-incoming", "defer"]
        handle = self._launch(config, argv)
        try:
            if before_load is not None:
                before_load()
            feed_state(handle, state, qmp_sock=QMP_SOCK, timeout=timeout)
        except BaseException:
            self.kill(handle)
            raise
        return handle

    def pause(self, handle: VMHandle, state: Path, memory_file: str, *, timeout: float) -> None:
        """Stop the guest, write its device state to ``state`` and its RAM to the workdir's
        ``memory_file`` (nothing to copy when it already runs from that file), then end
        QEMU. The disk (flushed by the migration) stays in place. See
        :mod:`pyro.vmm.qemu_snapshot`.

        Raises:
            VMMError: when QEMU refuses, the migration fails or times out (QEMU then runs on).
        """
        from pyro.vmm.qemu_snapshot import save_state

        memory = handle.workdir / memory_file
        save_state(
            handle,
            state,
            memory,
            None,
            overlay_name=OVERLAY,
            qmp_sock=QMP_SOCK,
            timeout=timeout,
            keep_running=False,
        )
        paths.private_file(memory)
        self.kill(handle)

    def resume(
        self,
        config: VMConfig,
        state: Path,
        *,
        timeout: float = 30.0,
    ) -> VMHandle:
        """Start QEMU over the VM's own disk with its RAM mapped shared from
        ``config.memory_file``, and load the device state ``state`` saved by :meth:`pause`;
        the guest runs on from the pause.

        Raises:
            VMMError: when QEMU exits or refuses the state.
        """
        from pyro.vmm.qemu_snapshot import feed_state

        if config.memory_file is None:
            raise VMMError(f"VM {config.vm_id}: resuming needs its memory file")
        workdir = paths.private_dir(config.workdir)
        remove_files(workdir, (AGENT_SOCK, QMP_SOCK, PIDFILE))
        argv = build_argv(config, accel=self.accel, binary=self.binary)
        argv += ["-incoming", "defer"]
        handle = self._launch(config, argv)
        handle.extra["ram_file"] = config.memory_file
        try:
            feed_state(handle, state, qmp_sock=QMP_SOCK, timeout=timeout)
        except BaseException:
            self.kill(handle)
            raise
        return handle

    def is_alive(self, handle: VMHandle) -> bool:
        return vmm_process(handle) is not None

    def stop(self, handle: VMHandle, *, timeout: float) -> None:
        """QMP ``quit``, then kill if QEMU is still there after ``timeout``.

        microvm without ACPI has no power button, so ``quit`` is the graceful path: QEMU
        flushes the overlay and exits.

        Raises:
            VMMError: when the process cannot be killed.
        """
        if vmm_process(handle) is not None:
            with contextlib.suppress(VMMError):
                self.qmp(handle, "quit")
            wait_exit(handle, timeout)
        self.kill(handle)

    def kill(self, handle: VMHandle) -> None:
        """SIGKILL and reap QEMU; wait for its console keeper to write the last output;
        kill allowlist relays still running for it; remove its sockets, pidfile and
        (ephemeral VMs only) overlay: a persistent VM's disk stays for its next start.
        Idempotent.

        Raises:
            VMMError: when the process survives SIGKILL.
        """
        kill_vmm(handle)
        finish_console(handle)
        if handle.extra.get("relays"):
            from pyro.net.relay import kill_relays

            kill_relays(handle.vm_id)
        disk = (OVERLAY,) if handle.ephemeral else ()
        remove_files(handle.workdir, (AGENT_SOCK, QMP_SOCK, PIDFILE, *disk))

    def serial_log(self, handle: VMHandle) -> Path:
        return handle.workdir / SERIAL_LOG


def _escaped(path: Path) -> str:
    """``path`` as one value of a QEMU option list (a comma is written twice)."""
    return str(path.absolute()).replace(",", ",,")


def _connect_retrying(handle: VMHandle, name: str, *, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        if vmm_process(handle) is None:
            raise BootError(_exited_summary(handle))
        try:
            return launch.connect_unix(handle.workdir, name, timeout=max(0.1, timeout))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise BootError(
                f"VM {handle.vm_id}: agent socket {name} not reachable after {timeout:.1f} s"
            ) from last
        time.sleep(0.02)


def _exited_summary(handle: VMHandle) -> str:
    log = launch.tail_text(handle.workdir / VMM_LOG, 300).strip().splitlines()
    detail = f": {log[-1]}" if log else ""
    return f"VMM of VM {handle.vm_id} exited before the agent connected{detail}"
