"""Firecracker backend: one ``firecracker`` process per VM, configured over its HTTP API.

Layout of a VM's workdir (Firecracker runs with ``cwd=workdir`` and binds relative socket
names; the host reaches them through ``/proc/self/fd/N/…``, see launch.py):

``fc.sock``        Firecracker's API socket
``vsock.sock``     host side of the guest's virtio-vsock (``CONNECT <port>`` handshake)
``rootfs.ext4``    the VM's disk: reflink or sparse copy of the cached base rootfs
``serial.log``     Firecracker's stdout: the guest console (ttyS0) plus its own warnings,
                   through the console keeper that keeps it bounded (launch.py, console.py)
``vmm.log``        Firecracker's stderr

The jailer (chroot, namespaces, cgroups, dropped privileges) is not used yet: when pyro
runs as root, the VM is confined only by Firecracker's built-in seccomp filters.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from pathlib import Path
from typing import Any

from pyro import paths
from pyro.errors import BootError, VMMError
from pyro.net.ports import check_ports_free
from pyro.net.tap import TapLease, TapNetwork
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
from pyro.vmm.probe import find_firecracker

API_SOCK = "fc.sock"
VSOCK_SOCK = "vsock.sock"
DISK = "rootfs.ext4"
VMM_LOG = "vmm.log"
GUEST_CID = 3
AGENT_VSOCK_PORT = 1024
BASE_CMDLINE = ("console=ttyS0", "reboot=k", "panic=1", "pci=off", "quiet")


def instance_id(vm_id: str) -> str:
    """Firecracker's ``--id`` for ``vm_id`` (it allows only ``[A-Za-z0-9-]``, ≤ 64 chars)."""
    return ("pyro-" + re.sub(r"[^A-Za-z0-9-]", "-", vm_id))[:64]


def api_requests(
    config: VMConfig, disk: Path, lease: TapLease | None = None, net_cmdline: tuple[str, ...] = ()
) -> list[tuple[str, dict[str, Any]]]:
    """The API calls (path, JSON body) that configure and start ``config``'s VM, in order.

    ``lease`` (see pyro.net.tap) adds the guest's network interface on its TAP device.
    """
    boot_args = " ".join((*BASE_CMDLINE, *config.cmdline_extra, *net_cmdline))
    nic: list[tuple[str, dict[str, Any]]] = []
    if lease is not None:
        nic.append(
            (
                "/network-interfaces/eth0",
                {"iface_id": "eth0", "host_dev_name": lease.tap, "guest_mac": lease.mac},
            )
        )
    return [
        (
            "/boot-source",
            {
                "kernel_image_path": str(config.kernel.absolute()),
                "initrd_path": str(config.initrd.absolute()),
                "boot_args": boot_args,
            },
        ),
        (
            "/drives/rootfs",
            # Not the root device: the agent (/init of the initrd) mounts the disk itself.
            {
                "drive_id": "rootfs",
                "path_on_host": str(disk.absolute()),
                "is_root_device": False,
                "is_read_only": False,
            },
        ),
        ("/machine-config", {"vcpu_count": config.vcpus, "mem_size_mib": config.memory_mib}),
        ("/vsock", {"guest_cid": GUEST_CID, "uds_path": VSOCK_SOCK}),
        *nic,
        ("/actions", {"action_type": "InstanceStart"}),
    ]


class FirecrackerBackend:
    """Runs each VM in its own Firecracker process (needs hardware KVM to run commands)."""

    name = "firecracker"

    def __init__(self, binary: Path | None = None) -> None:
        self._binary = binary

    def probe(self) -> BackendInfo:
        """This backend's entry from :func:`pyro.vmm.probe.probe_backends`."""
        from pyro.vmm.probe import probe_backends

        return next(info for info in probe_backends() if info.name == self.name)

    def spawn(self, config: VMConfig) -> VMHandle:
        """Copy the disk, start Firecracker, configure it and start the instance.

        Raises:
            VMMError: when the binary is missing, the process dies or the API refuses.
            NetworkError: when the TAP device or its nftables rules cannot be made.
        """
        if config.data_disk is not None:
            raise VMMError(
                "the firecracker backend does not attach data disks",
                hint="copy the files through the agent (pyro.machines.datadisk.wanted decides)",
            )
        binary = self._binary or find_firecracker()
        if binary is None:
            raise VMMError(
                "firecracker binary not found",
                hint="set PYRO_FIRECRACKER to its path or put it on PATH",
            )
        workdir = paths.private_dir(config.workdir)
        remove_files(workdir, (API_SOCK, VSOCK_SOCK))
        disk = workdir / DISK
        # A persistent VM boots again from its own disk after a stop (as with QEMU).
        if config.ephemeral or not disk.is_file():
            overlay.create_sparse_copy(config.rootfs, disk)
        paths.private_file(disk)  # cp gives it the base image's 0644
        tag = instance_id(config.vm_id)
        argv = [str(binary), "--api-sock", API_SOCK, "--id", tag, "--level", "Warning"]
        lease: TapLease | None = None
        net_cmdline: tuple[str, ...] = ()
        net_state = workdir.parent.parent
        if config.network is not None and config.network.enabled:
            check_ports_free(host for host, _ in config.network.publish)
            lease, hosts = TapNetwork(net_state).setup(config.vm_id, config.network)
            net_cmdline = lease.guest_cmdline(hosts)
        try:
            started = launch.start_process(
                argv,
                workdir=workdir,
                ephemeral=config.ephemeral,
                log_path=workdir / VMM_LOG,
                console_log=workdir / SERIAL_LOG,
            )
        except BaseException:
            if lease is not None:
                TapNetwork(net_state).teardown(config.vm_id)
            raise
        handle = VMHandle(
            vm_id=config.vm_id,
            backend=self.name,
            pid=started.vmm.pid,
            workdir=workdir,
            agent_endpoint=VSOCK_SOCK,
            started_at=now(),
            start_ticks=process_start(started.vmm.pid),
            ephemeral=config.ephemeral,
            extra={
                "cmdline_tag": tag,
                **({"net_state": str(net_state)} if lease else {}),
                **console_extra(started.console),
            },
        )
        try:
            for path, body in api_requests(config, disk, lease, net_cmdline):
                self.api(handle, "PUT", path, body)
        except VMMError:
            self.kill(handle)
            raise
        return handle

    def api(
        self, handle: VMHandle, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        """One Firecracker API call; waits up to 5 s for the API socket to appear.

        Raises:
            VMMError: when the API is unreachable or answers with an error.
        """
        import httpx  # lazily: a costly import (docs/performance.md) the probe must not pay

        deadline = time.monotonic() + 5.0
        with launch.short_dir(handle.workdir) as short:
            transport = httpx.HTTPTransport(uds=f"{short}/{API_SOCK}")
            with httpx.Client(transport=transport, base_url="http://localhost") as client:
                while True:
                    try:
                        response = client.request(method, path, json=body, timeout=10.0)
                        break
                    except httpx.TransportError as exc:
                        if time.monotonic() > deadline or vmm_process(handle) is None:
                            raise VMMError(
                                f"Firecracker API of VM {handle.vm_id} unreachable: {exc}",
                                hint="see the VM's serial.log and vmm.log",
                            ) from exc
                        time.sleep(0.01)
        if response.is_error:
            raise VMMError(
                f"Firecracker refused {method} {path} for VM {handle.vm_id}: "
                f"{response.status_code} {response.text.strip()}",
                hint="check the kernel, initrd and disk paths and the VM's vcpus/memory",
            )
        return response.json() if response.content else None

    def connect_agent(self, handle: VMHandle, *, timeout: float) -> socket.socket:
        """Connect to the agent's vsock port through Firecracker's ``CONNECT`` handshake.

        Raises:
            BootError: when Firecracker exits or the guest does not accept within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            if vmm_process(handle) is None:
                raise BootError(
                    f"Firecracker of VM {handle.vm_id} exited before the agent answered"
                )
            sock = _try_handshake(handle.workdir, timeout=max(0.1, deadline - time.monotonic()))
            if sock is not None:
                return sock
            if time.monotonic() >= deadline:
                raise BootError(
                    f"VM {handle.vm_id}: guest agent did not accept vsock port "
                    f"{AGENT_VSOCK_PORT} within {timeout:.1f} s"
                )
            time.sleep(0.05)

    def is_alive(self, handle: VMHandle) -> bool:
        return vmm_process(handle) is not None

    def stop(self, handle: VMHandle, *, timeout: float) -> None:
        """``SendCtrlAltDel``, then kill if Firecracker is still there after ``timeout``.

        Raises:
            VMMError: when the process cannot be killed.
        """
        if vmm_process(handle) is not None:
            with contextlib.suppress(VMMError):
                self.api(handle, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
            wait_exit(handle, timeout)
        self.kill(handle)

    def kill(self, handle: VMHandle) -> None:
        """SIGKILL and reap Firecracker (its console keeper writes the last output and
        ends); remove its TAP device, nftables table and address
        lease, its sockets and (ephemeral VMs only) its disk copy: a persistent VM's disk
        stays for its next start. Idempotent.

        Raises:
            VMMError: when the process survives SIGKILL.
        """
        kill_vmm(handle)
        finish_console(handle)
        if "net_state" in handle.extra:
            TapNetwork(Path(handle.extra["net_state"])).teardown(handle.vm_id)
        disk = (DISK,) if handle.ephemeral else ()
        remove_files(handle.workdir, (API_SOCK, VSOCK_SOCK, *disk))
        for listener in handle.workdir.glob(f"{VSOCK_SOCK}_*"):
            listener.unlink(missing_ok=True)

    def serial_log(self, handle: VMHandle) -> Path:
        return handle.workdir / SERIAL_LOG


def _try_handshake(workdir: Path, *, timeout: float) -> socket.socket | None:
    try:
        sock = launch.connect_unix(workdir, VSOCK_SOCK, timeout=timeout)
    except OSError:
        return None
    try:
        sock.sendall(f"CONNECT {AGENT_VSOCK_PORT}\n".encode())
        reply = b""
        # Byte by byte: whatever follows the reply line belongs to the agent.
        while not reply.endswith(b"\n") and len(reply) < 64:
            chunk = sock.recv(1)
            if not chunk:
                break
            reply += chunk
        if reply.startswith(b"OK "):
            sock.settimeout(None)
            return sock
    except OSError:
        pass
    sock.close()
    return None
