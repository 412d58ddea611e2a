"""The disk-backed VM registry: VMs that outlive one pyro process.

Each VM has a directory ``$PYRO_STATE_DIR/vms/<id>/`` holding ``vm.json`` (its
:class:`VMRecord`), the copy-on-write disk, the VMM's sockets and the serial log. Every
pyro command calls :meth:`VMRegistry.reap` first, so a VM whose owner died (kill -9 of
``pyro run``), whose VMM died, or whose TTL ran out never lingers.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock
from pydantic import ValidationError

from pyro import paths
from pyro.errors import BootError, NotFoundError, PyroError, StateError
from pyro.machines.record import VMRecord, VMState, check_limits
from pyro.process.identity import own_identity, process_alive

__all__ = ["BOOT_TIMEOUT_S", "VMRecord", "VMRegistry", "VMState", "check_id", "check_limits"]

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.vmm.base import Backend, VMHandle
    from pyro.vmm.snapshot import Snapshot

BOOT_TIMEOUT_S = 60.0
SERIAL_TAIL_LINES = 25


def check_id(vm_id: str) -> None:
    """Refuse what cannot be a VM id before it names a file (``..``, ``a/b``, NUL).

    Raises:
        NotFoundError: ``vm_id`` cannot be an id.
    """
    if not vm_id or "/" in vm_id or "\0" in vm_id or vm_id.startswith("."):
        raise NotFoundError(f"no VM with id {vm_id!r}")


class VMRegistry:
    """Creates, starts, connects to, stops, deletes and reaps VMs recorded on disk."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or paths.state_dir()) / "vms"
        self.locks = (root or paths.state_dir()) / "locks"

    # -- records ---------------------------------------------------------------------------

    def dir(self, vm_id: str) -> Path:
        return self.root / vm_id

    def private(self) -> None:
        """Make the state folder and its ``vms``/``locks`` folders owner-only (0700),
        tightening those an older pyro made 0755; creates only the state folder itself.

        Raises:
            StateError: a folder cannot be made or is not ours to change.
        """
        try:
            paths.private_dir(self.root.parent)
            for folder in (self.root, self.locks):
                paths.private_dir(folder, create=False)
        except OSError as exc:
            raise StateError(
                f"cannot make the state folder {self.root.parent} private: {exc.strerror or exc}",
                "check that it is yours and writable, or point PYRO_STATE_DIR elsewhere",
            ) from exc

    @contextlib.contextmanager
    def locked(self, vm_id: str) -> Iterator[None]:
        """Hold the VM's lock; the lock file goes when the VM does not exist (any more).

        Raises:
            NotFoundError: ``vm_id`` cannot be an id (checked before any file is made).
        """
        check_id(vm_id)
        lock = self.lock_path(f"vm-{vm_id}")
        with FileLock(str(lock), timeout=120, mode=paths.PRIVATE_FILE_MODE):
            try:
                yield
            finally:
                # Removed while still held: a waiter that opened this file finds it
                # unlinked once it gets the lock, and takes a fresh one.
                if not self.dir(vm_id).exists():
                    with contextlib.suppress(OSError):
                        lock.unlink()

    def lock_path(self, name: str) -> Path:
        """``locks/NAME.lock``, the locks folder made (owner-only) first.

        Raises:
            StateError: the folder cannot be made.
        """
        self.private()
        try:
            paths.private_dir(self.locks)
        except OSError as exc:
            raise StateError(f"cannot make the lock folder {self.locks}: {exc}") from exc
        return self.locks / f"{name}.lock"

    def remove_locks(self, vm_id: str) -> None:
        """Remove every lock file of a VM or task that no longer exists."""
        for name in (f"vm-{vm_id}", f"task-{vm_id}", f"task-{vm_id}.session"):
            with contextlib.suppress(OSError):
                (self.locks / f"{name}.lock").unlink()

    def get(self, vm_id: str) -> VMRecord:
        """Raises: NotFoundError: no VM (or task) has this id."""
        check_id(vm_id)
        path = self.dir(vm_id) / "vm.json"
        try:
            return VMRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"no VM with id {vm_id!r}") from None
        except (OSError, ValidationError) as exc:
            raise StateError(
                f"the record of VM {vm_id} is unreadable: {exc}",
                f"delete it with 'pyro vm delete {vm_id}'",
            ) from exc

    def save(self, record: VMRecord) -> None:
        paths.write_private(self.dir(record.id) / "vm.json", record.model_dump_json(indent=2))

    def list(self, kind: str | None = None) -> list[VMRecord]:
        records = []
        if not self.root.is_dir():
            return []
        for child in sorted(self.root.iterdir()):
            try:
                record = self.get(child.name)
            except PyroError:
                continue
            if kind is None or record.kind == kind:
                records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def create(
        self,
        *,
        environment: str,
        environment_digest: str,
        kernel: Path,
        initrd: Path,
        rootfs: Path,
        backend: str,
        vcpus: int,
        memory_mib: int,
        kind: Literal["vm", "task"] = "vm",
        name: str | None = None,
        labels: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
        ephemeral: bool = False,
        vmm_outlives_owner: bool | None = None,
        network: dict[str, Any] | None = None,
    ) -> VMRecord:
        """Record a new VM (not started).

        An ephemeral VM belongs to this process: when the process dies, the next pyro
        command reaps it. Its VMM dies with this process too, unless
        ``vmm_outlives_owner`` (the VM may be kept after the run; see :meth:`disown`).
        """
        running = sum(record.state is VMState.RUNNING for record in self.list())
        check_limits(vcpus=vcpus, memory_mib=memory_mib, running=running)
        vm_id = secrets.token_hex(6)
        owner_pid, owner_started = own_identity() if ephemeral else (None, None)
        record = VMRecord(
            id=vm_id,
            kind=kind,
            name=name,
            labels=labels or {},
            environment=environment,
            environment_digest=environment_digest,
            backend=backend,
            vcpus=vcpus,
            memory_mib=memory_mib,
            network=network,
            kernel=str(kernel),
            initrd=str(initrd),
            rootfs=str(rootfs),
            created_at=time.time(),
            ttl_seconds=ttl_seconds,
            ephemeral=ephemeral,
            detached=(not ephemeral) if vmm_outlives_owner is None else vmm_outlives_owner,
            owner_pid=owner_pid,
            owner_started=owner_started,
        )
        self.private()
        try:
            paths.private_dir(self.root)
            os.mkdir(self.dir(vm_id), paths.PRIVATE_DIR_MODE)
            paths.private_dir(self.dir(vm_id), create=False)  # the umask may have taken bits
        except OSError as exc:
            raise StateError(f"cannot make the folder of VM {vm_id}: {exc}") from exc
        self.save(record)
        return record

    # -- lifecycle ------------------------------------------------------------------------

    def _backend(self, record: VMRecord) -> Backend:
        from pyro.vmm import get_backend

        return get_backend(record.backend)

    def _handle(self, record: VMRecord) -> VMHandle:
        from pyro.vmm.base import VMHandle

        if record.handle is None:
            raise StateError(
                f"VM {record.id} is {record.state.value}, not running",
                f"start it first with 'pyro {record.kind} start {record.id}'",
            )
        return VMHandle.from_dict(record.handle)

    def start(
        self,
        vm_id: str,
        *,
        boot_timeout: float = BOOT_TIMEOUT_S,
        snapshot: Snapshot | None = None,
        shared_ram: bool = False,
        data_disk: Path | None = None,
        spare_disk: Path | None = None,
        resume: tuple[Path, str] | None = None,
        hostname: str | None = None,
    ) -> tuple[VMRecord, AgentClient]:
        """Boot the VM (or restore it from ``snapshot``) and wait for its agent's hello.
        ``shared_ram``: a cold boot that will be saved (:attr:`VMConfig.shared_ram`).
        ``data_disk``: an image attached for this boot (:mod:`pyro.machines.datadisk`).
        ``spare_disk``: an empty file attached as the spare disk (:mod:`pyro.machines.pushdisk`);
        a VM that is not a task on QEMU always gets one.
        ``resume``: (device state file, memory file name) of a VM :meth:`pause` saved:
        it runs on from there over its own disk. ``hostname``: set by the hello.

        Raises:
            StateError: the VM is already running.
            BootError: the guest did not answer in time (the VM is stopped again).
            VMMError: ``snapshot`` was given and the backend cannot restore, or refused it.
        """
        from pyro.net.policy import NetworkConfig
        from pyro.vmm.base import VMConfig

        with self.locked(vm_id):
            record = self.get(vm_id)
            if record.state is VMState.RUNNING:
                raise StateError(f"VM {vm_id} is already running", "use it, or stop it first")
            backend = self._backend(record)
            if spare_disk is None and record.kind == "vm" and record.backend.startswith("qemu"):
                # Every VM (not a task: its own flag says) gets one, saved guests included.
                from pyro.machines.pushdisk import placeholder

                spare_disk = placeholder(self.dir(record.id))
            config = VMConfig(
                vm_id=record.id,
                workdir=self.dir(record.id),
                kernel=Path(record.kernel),
                initrd=Path(record.initrd),
                rootfs=Path(record.rootfs),
                vcpus=record.vcpus,
                memory_mib=record.memory_mib,
                network=NetworkConfig.from_dict(record.network),
                ephemeral=not record.detached,
                shared_ram=shared_ram,
                data_disk=data_disk,
                spare_disk=spare_disk,
                memory_file=resume[1] if resume is not None else None,
            )
            if data_disk is not None and snapshot is not None:
                raise StateError(f"VM {vm_id}: a data disk is attached on a cold boot only")
            if resume is not None:
                if not hasattr(backend, "resume"):
                    raise StateError(f"VM {vm_id}: backend {record.backend} cannot resume")
                handle = backend.resume(config, resume[0])
            elif snapshot is None:
                handle = backend.spawn(config)
            else:
                handle = snapshot.restore(backend, config)
            record = record.model_copy(
                update={
                    "handle": handle.to_dict(),
                    "state": VMState.RUNNING,
                    "started_at": time.time(),
                    "reason": "",
                }
            )
            self.save(record)
            deadline = time.monotonic() + boot_timeout
            try:
                # Imported while the guest boots: nothing before the spawn waits for it.
                from pyro.guest.client import AgentClient

                sock = backend.connect_agent(handle, timeout=boot_timeout)
                remaining = max(0.5, deadline - time.monotonic())
                client = AgentClient.connect(sock, hello_timeout=remaining, hostname=hostname)
            except PyroError as exc:
                backend.kill(handle)
                tail = self.serial_tail(record.id)
                record = record.model_copy(
                    update={
                        "handle": None,
                        "state": VMState.STOPPED,
                        "reason": f"boot failed: {exc.summary}",
                    }
                )
                self.save(record)
                raise BootError(
                    f"VM {vm_id} did not become ready within {boot_timeout:.0f} s: {exc.summary}"
                    + (f"\n--- serial log (last lines) ---\n{tail}" if tail else ""),
                ) from exc
            except BaseException:
                backend.kill(handle)
                raise
            return record, client

    def connect(self, vm_id: str, *, timeout: float = 10.0) -> AgentClient:
        """A fresh agent connection to a running VM.

        Raises:
            StateError: the VM is not running (or its VMM died).
        """
        from pyro.guest.client import AgentClient

        record = self.get(vm_id)
        backend = self._backend(record)
        handle = self._handle(record)
        if not backend.is_alive(handle):
            self._mark_dead(record)
            raise StateError(
                f"VM {vm_id} is not running: its VMM process exited",
                f"see 'pyro {record.kind} logs {vm_id}'; start it again or delete it",
            )
        sock = backend.connect_agent(handle, timeout=timeout)
        return AgentClient.connect(sock, hello_timeout=timeout)

    def agent_socket(self, vm_id: str, *, timeout: float = 10.0) -> tuple[socket.socket, int]:
        """A raw agent connection to a running VM (no HELLO said yet) and a pidfd of its
        VMM, for a process that shares the connection (:mod:`pyro.tasks.session`).

        Raises:
            StateError: the VM is not running (or its VMM died).
        """
        record = self.get(vm_id)
        backend = self._backend(record)
        handle = self._handle(record)
        try:
            pidfd = os.pidfd_open(handle.pid)
        except OSError:
            pidfd = -1
        # Checked after the pidfd is open: the PID cannot be reused while it is held.
        if pidfd < 0 or not backend.is_alive(handle):
            if pidfd >= 0:
                os.close(pidfd)
            self._mark_dead(record)
            raise StateError(
                f"VM {vm_id} is not running: its VMM process exited",
                f"see 'pyro {record.kind} logs {vm_id}'; start it again or delete it",
            )
        try:
            return backend.connect_agent(handle, timeout=timeout), pidfd
        except BaseException:
            os.close(pidfd)
            raise

    def stop(
        self, vm_id: str, *, timeout: float = 10.0, reason: str = "stopped by user"
    ) -> VMRecord:
        """Shut the guest down (sync + power off), then make sure the VMM is gone."""
        with self.locked(vm_id):
            record = self.get(vm_id)
            if record.handle is not None:
                backend = self._backend(record)
                handle = self._handle(record)
                try:
                    backend.stop(handle, timeout=timeout)
                finally:
                    backend.kill(handle)
            record = record.model_copy(
                update={"handle": None, "state": VMState.STOPPED, "reason": reason}
            )
            self.save(record)
            return record

    def pause(self, vm_id: str, state: Path, memory_file: str, *, timeout: float) -> VMRecord:
        """Save the running VM's device state to ``state`` and its RAM to the VM folder's
        ``memory_file``, then end its VMM; the record says stopped (the caller knows it is
        paused). :meth:`start` with ``resume`` brings it back.

        Raises:
            StateError: not running, or the backend cannot pause.  VMMError: the save failed
                (the VM runs on).
        """
        with self.locked(vm_id):
            record = self.get(vm_id)
            backend = self._backend(record)
            handle = self._handle(record)
            if not hasattr(backend, "pause"):
                raise StateError(f"VM {vm_id}: backend {record.backend} cannot pause")
            backend.pause(handle, state, memory_file, timeout=timeout)
            record = record.model_copy(
                update={"handle": None, "state": VMState.STOPPED, "reason": "paused"}
            )
            self.save(record)
            return record

    def kill(self, vm_id: str, reason: str) -> None:
        """Kill the VMM at once (no guest shutdown); keep the record."""
        with self.locked(vm_id):
            record = self.get(vm_id)
            if record.handle is not None:
                self._backend(record).kill(self._handle(record))
            self.save(
                record.model_copy(
                    update={"handle": None, "state": VMState.STOPPED, "reason": reason}
                )
            )

    def delete(self, vm_id: str) -> bool:
        """Kill the VM if running and remove everything it owns (its lock files too).
        Idempotent: False if absent."""
        try:
            check_id(vm_id)
        except NotFoundError:
            return False
        try:
            with self.locked(vm_id):
                try:
                    record = self.get(vm_id)
                except NotFoundError:
                    return False
                except StateError:
                    record = None
                if record is not None and record.handle is not None:
                    with contextlib.suppress(PyroError, OSError):
                        self._backend(record).kill(self._handle(record))
                shutil.rmtree(self.dir(vm_id), ignore_errors=True)
                return True
        finally:
            # The task locks too: a task reaped here never passes TaskManager.delete.
            self.remove_locks(vm_id)

    def disown(self, vm_id: str) -> VMRecord:
        """Make an ephemeral VM persistent: it no longer dies with its owner's records."""
        with self.locked(vm_id):
            record = self.get(vm_id)
            record = record.model_copy(
                update={"ephemeral": False, "owner_pid": None, "owner_started": None}
            )
            self.save(record)
            return record

    def _mark_dead(self, record: VMRecord) -> None:
        with contextlib.suppress(PyroError, OSError):
            self._backend(record).kill(self._handle(record))
        self.save(
            record.model_copy(
                update={
                    "handle": None,
                    "state": VMState.STOPPED,
                    "reason": "VMM process exited unexpectedly",
                }
            )
        )

    def reap(self) -> builtins.list[str]:
        """Clean up after the dead: owners gone, VMMs gone, TTLs over. Returns reaped ids."""
        reaped: builtins.list[str] = []
        now = time.time()
        if self.root.parent.is_dir():
            # Tightens what an older pyro made 0755; a folder that is not ours is reported
            # by the command that writes to it, not by every listing.
            with contextlib.suppress(StateError):
                self.private()
        for record in self.list():
            if record.ephemeral and not process_alive(record.owner_pid, record.owner_started):
                self.delete(record.id)
                reaped.append(record.id)
                continue
            if record.ttl_seconds is not None and now - record.created_at > record.ttl_seconds:
                self.delete(record.id)
                reaped.append(record.id)
                continue
            running = record.state is VMState.RUNNING and record.handle is not None
            if running and not self._alive(record) and self._mark_dead_if_still(record.id):
                reaped.append(record.id)
        self._reap_networks()
        from pyro.machines.datadisk import reap_staging

        reap_staging()
        return reaped

    def is_running(self, vm_id: str) -> bool:
        """True when the VM exists, is recorded running and its VMM process is alive."""
        try:
            record = self.get(vm_id)
        except PyroError:
            return False
        return record.state is VMState.RUNNING and self._alive(record)

    def _alive(self, record: VMRecord) -> bool:
        try:
            return self._backend(record).is_alive(self._handle(record))
        except PyroError:
            return False

    def _mark_dead_if_still(self, vm_id: str) -> bool:
        """Under the VM's lock, record a dead VMM — unless the owner deleted or restarted the
        VM meanwhile (its VMM is killed just before its directory goes: writing the record
        back then would resurrect a deleted VM)."""
        with self.locked(vm_id):
            try:
                record = self.get(vm_id)
            except PyroError:
                return False
            if record.state is not VMState.RUNNING or record.handle is None or self._alive(record):
                return False
            self._mark_dead(record)
            return True

    def _reap_networks(self) -> None:
        """Firecracker TAP devices and nftables tables whose VM is gone (pyro.net.tap)."""
        if not (self.root.parent / "net" / "leases").is_dir():
            return
        from pyro.net.tap import reap_leases

        def running(vm_id: str) -> bool:
            try:
                return self.get(vm_id).state is VMState.RUNNING
            except PyroError:
                return False

        reap_leases(self.root.parent, running)

    # -- logs -----------------------------------------------------------------------------

    def serial_log_path(self, vm_id: str) -> Path:
        return self.dir(vm_id) / "serial.log"

    def serial_tail(self, vm_id: str, lines: int = SERIAL_TAIL_LINES) -> str:
        """The last ``lines`` lines of the VM's serial console, for error messages."""
        from pyro.vmm.launch import tail_text

        text = tail_text(self.serial_log_path(vm_id), 16384).replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])
