"""The VMM backend protocol and the plain data it exchanges with the rest of pyro.

A backend starts one VMM process per VM, gives it a copy-on-write disk over the cached
base rootfs and hands back a :class:`VMHandle`: a JSON-serialisable record another pyro
process can use to reattach (connect to the agent, stop, kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pyro.errors import VMMError
from pyro.net.policy import NetworkConfig
from pyro.plan.inventory import BackendInfo
from pyro.process.identity import start_ticks

if TYPE_CHECKING:  # psutil is imported on first use: planning never needs it
    import psutil

SERIAL_LOG = "serial.log"


@dataclass(frozen=True)
class VMConfig:
    """Everything a backend needs to start one VM.

    ``workdir`` belongs to this VM (the backend writes its disk, sockets, logs there);
    ``rootfs`` is the cached base image and is never written.
    """

    vm_id: str
    workdir: Path
    kernel: Path
    initrd: Path
    rootfs: Path
    vcpus: int
    memory_mib: int
    cmdline_extra: tuple[str, ...] = ()
    network: NetworkConfig | None = None
    ephemeral: bool = True
    shared_ram: bool = False
    """Guest RAM in a memfd QEMU maps shared, so that a save can copy it out of the
    migration stream (QEMU only; the cold boot that saves a snapshot)."""
    data_disk: Path | None = None
    """A raw image attached as a second virtio disk (serial ``pyro-data``): bulk data the
    guest mounts (:mod:`pyro.machines.datadisk`; QEMU only). The guest may write it; the
    host never reads it back."""
    spare_disk: Path | None = None
    """An empty file attached as a spare virtio disk (serial ``pyro-push``) whose medium a
    running guest's bulk copy swaps for an image (:mod:`pyro.machines.pushdisk`; QEMU only:
    a ``microvm`` cannot hot-plug a disk). Part of the device set: a paused VM resumes
    with the spare it had."""
    memory_file: str | None = None
    """Guest RAM is this file of ``workdir``, mapped shared: a paused task's memory that the
    resumed guest goes on using, so the next pause copies nothing (QEMU only)."""


@dataclass
class VMHandle:
    """A running VMM, as far as another process needs to know to find and control it."""

    vm_id: str
    backend: str
    pid: int
    workdir: Path
    agent_endpoint: str
    started_at: float
    #: Start time of the VMM process in clock ticks since boot (/proc/PID/stat field 22):
    #: together with the vm_id in its command line this tells the VMM apart from an
    #: unrelated process that reused its PID. Ticks since boot, unlike psutil's
    #: create_time, do not move when the wall clock is stepped.
    start_ticks: float
    ephemeral: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VMHandle:
        """Rebuild a handle written by :meth:`to_dict`.

        Raises:
            VMMError: when ``data`` lacks a field or has one of the wrong type.
        """
        try:
            return cls(
                vm_id=str(data["vm_id"]),
                backend=str(data["backend"]),
                pid=int(data["pid"]),
                workdir=Path(data["workdir"]),
                agent_endpoint=str(data["agent_endpoint"]),
                started_at=float(data["started_at"]),
                start_ticks=float(data["start_ticks"]),
                ephemeral=bool(data.get("ephemeral", True)),
                extra={str(k): str(v) for k, v in dict(data.get("extra", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VMMError(
                f"VM handle record is malformed: {exc!r}",
                hint="the VM's vm.json is damaged; kill the VM and create a new one",
            ) from exc


class Backend(Protocol):
    """One kind of VMM. Implementations live in one module each; see ``BACKENDS``."""

    name: str

    def probe(self) -> BackendInfo:
        """Say whether this backend can run guests here, and its version."""
        ...

    def spawn(self, config: VMConfig) -> VMHandle:
        """Create the VM's disk (a persistent VM reuses an existing one), start the VMM and
        boot the guest; return without waiting.

        Raises:
            VMMError: when the disk cannot be made or the VMM does not start.
        """
        ...

    def connect_agent(self, handle: VMHandle, *, timeout: float) -> socket.socket:
        """Return a connected stream socket to the guest agent.

        Raises:
            BootError: when no connection is possible within ``timeout`` or the VMM died.
        """
        ...

    def is_alive(self, handle: VMHandle) -> bool:
        """True while the VMM process of ``handle`` runs (and is still that VMM)."""
        ...

    def stop(self, handle: VMHandle, *, timeout: float) -> None:
        """Ask the VMM to shut down; kill it when it has not exited within ``timeout``."""
        ...

    def kill(self, handle: VMHandle) -> None:
        """Kill and reap the VMM and remove its sockets. Idempotent.

        An ephemeral VM's disk goes too; a persistent VM's disk stays so the next
        ``spawn`` with the same workdir boots from it (the workdir's owner deletes it).
        """
        ...

    def serial_log(self, handle: VMHandle) -> Path:
        """Path of the guest's serial console log."""
        ...


# --- process helpers shared by the backends ---------------------------------------------


def vmm_process(handle: VMHandle) -> psutil.Process | None:
    """The VMM process of ``handle``, or None when it is gone or the PID was reused."""
    import psutil

    try:
        if start_ticks(handle.pid) != handle.start_ticks:
            return None
        proc = psutil.Process(handle.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(proc)
            return None
        tag = handle.extra.get("cmdline_tag", handle.vm_id)
        if not any(tag in arg for arg in proc.cmdline()):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def kill_vmm(handle: VMHandle, *, wait: float = 5.0) -> None:
    """SIGKILL the VMM of ``handle`` if it is still that VMM, and reap it.

    Raises:
        VMMError: when the process survives SIGKILL for ``wait`` seconds.
    """
    import psutil

    proc = vmm_process(handle)
    if proc is None:
        return
    try:
        proc.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:
        return
    if not _reap(proc, timeout=wait):
        raise VMMError(
            f"VMM process {handle.pid} of VM {handle.vm_id} survived SIGKILL",
            hint="the process may be stuck in the kernel (D state); check 'ps' and dmesg",
        )


def console_extra(console: Any) -> dict[str, str]:
    """The handle's ``extra`` entries naming the console keeper of a VMM just started
    (``console``: its Popen, or None)."""
    if console is None:
        return {}
    return {"console_pid": str(console.pid), "console_ticks": str(process_start(console.pid))}


def console_process(handle: VMHandle) -> psutil.Process | None:
    """The console keeper of ``handle`` (pyro.vmm.console), or None when it is gone."""
    import psutil

    try:
        pid = int(handle.extra["console_pid"])
        if start_ticks(pid) != float(handle.extra["console_ticks"]):
            return None
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(proc)
            return None
        if not any(arg.endswith("console.py") for arg in proc.cmdline()):
            return None
        return proc
    except (KeyError, ValueError, psutil.Error, ProcessLookupError):
        return None


def finish_console(handle: VMHandle, *, wait: float = 5.0) -> None:
    """Once the VMM is gone: let its console keeper write the last output and exit (it does
    at end of file), so the serial log is complete when this returns; kill a keeper that
    is still there after ``wait`` seconds (something else holds its pipe)."""
    import psutil

    proc = console_process(handle)
    if proc is None or _reap(proc, timeout=wait):
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGKILL)
    _reap(proc, timeout=wait)


def wait_exit(handle: VMHandle, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the VMM to exit; True when it did."""
    proc = vmm_process(handle)
    return proc is None or _reap(proc, timeout=timeout)


def _reap(proc: psutil.Process, *, timeout: float = 0.0) -> bool:
    # psutil's wait() calls waitpid() for our own children (no zombie left behind)
    # and polls for processes we merely reattached to.
    import psutil

    try:
        proc.wait(timeout=timeout)
        return True
    except psutil.TimeoutExpired:
        return False
    except (psutil.NoSuchProcess, ChildProcessError):
        return True


def process_start(pid: int) -> float:
    """Identity stamp of ``pid`` for :attr:`VMHandle.start_ticks`.

    Waits (≤ 2 s) until the kernel shows the new command line: right after ``vfork`` +
    ``exec`` returns in the parent, ``/proc/PID/cmdline`` can still be empty, and a
    handle checked then would look like a stranger's process.

    Raises:
        VMMError: when the process already exited.
    """
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read(1):
                    break
        except OSError as exc:
            raise VMMError(f"VMM process {pid} exited right after start") from exc
        time.sleep(0.001)
    try:
        return start_ticks(pid)
    except ProcessLookupError as exc:
        raise VMMError(f"VMM process {pid} exited right after start") from exc


def remove_files(workdir: Path, names: tuple[str, ...]) -> None:
    """Remove ``names`` in ``workdir``; missing files are fine."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(workdir / name)


def now() -> float:
    """Wall-clock seconds, for handle timestamps."""
    return time.time()
