"""Forking a task: a new task from a running or paused task (disk + memory, no cold boot) or
from one of its disk snapshots (a cold boot from it).

The fork owns full copies of what it starts from, never a qcow2 backing file in the
source's folder: its disk is a copy of the source's overlay (only what the source changed
over the cached rootfs, so small) or, from a snapshot, ``qemu-img convert`` of that
snapshot onto the same rootfs; its memory is a copy of the source's RAM (only the pages
the guest touched). Deleting the source therefore never breaks a fork, and a fork's chain
is always ``fork overlay -> environment rootfs``.

Each fork gets its own identity: its hostname (set by every hello), a new
``/etc/machine-id``, and its own VMM with its own user-mode network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from pyro.errors import NotFoundError, StateError, UsageError, VMMError
from pyro.machines import datadisk
from pyro.machines.registry import VMState
from pyro.tasks import pause as pausing
from pyro.tasks import service_specs
from pyro.tasks.files import run_checked
from pyro.tasks.manager import TaskInfo, TaskManager, TaskMeta
from pyro.tasks.secrets import SecretStore
from pyro.tasks.snapshots import BASELINE, OVERLAY, SnapshotInfo, create_offline, require_qemu
from pyro.vmm.sparse import copy_sparse

#: Sets the identity a fork must not share with its source (argv: machine-id, hostname).
IDENTITY = (
    'printf "%s\\n" "$1" > /etc/machine-id && printf "%s\\n" "$2" > /etc/hostname'
    " && { [ ! -e /var/lib/dbus/machine-id ] || [ -L /var/lib/dbus/machine-id ]"
    ' || printf "%s\\n" "$1" > /var/lib/dbus/machine-id; }'
)
#: How long a fork waits for a command running in its source.
FORK_WAIT_S = 600.0


def fork(
    manager: TaskManager,
    source_id: str,
    *,
    snapshot: str | None = None,
    name: str | None = None,
) -> TaskInfo:
    """A new running task from ``source_id``'s current state (memory too when it runs or is
    paused), or from its disk snapshot ``snapshot``. The source runs on unaffected.

    Raises:
        NotFoundError: no such task or snapshot.  BackendUnavailableError: not QEMU.
        LimitError: the host cannot hold another VM.  BootError, VMMError.
    """
    record, meta = manager.get(source_id)
    require_qemu(record.backend)
    if snapshot is not None and not any(s.name == snapshot for s in meta.snapshots):
        names = ", ".join(s.name for s in meta.snapshots) or "none"
        raise NotFoundError(
            f"task {source_id} has no snapshot named {snapshot!r}", f"its snapshots: {names}"
        )
    network = dict(record.network or {})
    if network.get("publish"):
        # Host ports are the source's: a fork cannot publish them too.
        if snapshot is None:
            raise UsageError(
                f"task {source_id} publishes host ports, which its running fork cannot share",
                f"fork one of its snapshots instead ('pyro task fork {source_id} --from "
                "baseline'): that fork boots without published ports",
            )
        network["publish"] = []
    new = manager.registry.create(
        environment=record.environment,
        environment_digest=record.environment_digest,
        kernel=Path(record.kernel),
        initrd=Path(record.initrd),
        rootfs=Path(record.rootfs),
        backend=record.backend,
        vcpus=record.vcpus,
        memory_mib=record.memory_mib,
        kind="task",
        name=name,
        labels=dict(record.labels),
        ttl_seconds=record.ttl_seconds,
        network=network or None,
    )
    target = manager.dir(new.id)
    try:
        SecretStore(target).save(SecretStore(manager.dir(source_id)).load())
        fork_meta = TaskMeta(
            workspace=meta.workspace,
            idle_timeout_seconds=meta.idle_timeout_seconds,
            idle_action=meta.idle_action,
            last_activity_at=time.time(),
            seed=meta.seed,
            seed_disk=meta.seed_disk,
            spare_disk=meta.spare_disk,  # a copied pause resumes with the same devices
            secret_names=meta.secret_names,
            hostname=f"pyro-{new.id}",
            forked_from=source_id,
        )
        if snapshot is not None:
            _disk_from_snapshot(manager, source_id, snapshot, Path(record.rootfs), target)
            fork_meta.snapshots = [
                SnapshotInfo(name=BASELINE, created_at=time.time(), online=False, duration_ms=0)
            ]
        else:
            fork_meta.snapshots, fork_meta.paused = _copy_state(manager, source_id, target)
        if meta.seed_disk:
            _copy(manager.dir(source_id) / datadisk.IMAGE, target / datadisk.IMAGE)
        service_specs.copy_specs(manager.dir(source_id), target)
        manager.save_meta(new.id, fork_meta)
        with manager.session(new.id) as client:  # resumes it, or boots it from its disk
            run_checked(client, ["sh", "-c", IDENTITY, "identity", uuid.uuid4().hex, new.id])
    except BaseException:
        manager.delete(new.id)
        raise
    return manager.status(new.id)


def _copy_state(
    manager: TaskManager, source_id: str, target: Path
) -> tuple[list[SnapshotInfo], pausing.PauseInfo | None]:
    """Copy the source's disk (with its snapshots) and, unless it is stopped, its memory
    and device state into ``target``. Returns the snapshots and the fork's pause record
    (None: it boots cold)."""
    # The session keeps the source's commands out while its state is saved (a command
    # mid-way would be cut in two: half in the source, half in the fork).
    with manager.exclusive(source_id, wait=FORK_WAIT_S) as alone:
        if not alone:
            raise StateError(
                f"task {source_id} is busy with a command for more than {FORK_WAIT_S:.0f} s",
                "wait for it to finish, or fork one of its snapshots (--from)",
            )
        return _save_alone(manager, source_id, target)


def _save_alone(
    manager: TaskManager, source_id: str, target: Path
) -> tuple[list[SnapshotInfo], pausing.PauseInfo | None]:
    """:func:`_copy_state` with the source's agent to itself."""
    from pyro.vmm import get_backend
    from pyro.vmm.base import VMHandle

    source = manager.dir(source_id)
    with manager.registry.locked(source_id):
        record, meta = manager.get(source_id)
        begun = time.monotonic()
        if record.state is VMState.RUNNING and record.handle is not None:
            backend = get_backend(record.backend)
            if not hasattr(backend, "save_state"):
                raise StateError(f"backend {record.backend} cannot save a running task")
            try:
                backend.save_state(
                    VMHandle.from_dict(record.handle),
                    target / pausing.STATE,
                    target / pausing.MEMORY,
                    target / OVERLAY,
                    timeout=pausing.SAVE_TIMEOUT_S,
                )
            except VMMError as exc:
                if "no shared guest RAM" not in exc.summary:
                    raise
                raise StateError(
                    f"task {source_id} was booted without the memory layout a fork needs",
                    "stop and start it once, or fork one of its snapshots (--from)",
                ) from exc
        elif meta.paused is not None:
            _copy(source / pausing.STATE, target / pausing.STATE)
            _copy_memory(source / pausing.MEMORY, target / pausing.MEMORY)
            _copy(source / OVERLAY, target / OVERLAY)
        else:
            _copy(source / OVERLAY, target / OVERLAY)
            return list(meta.snapshots), None
        info = pausing.PauseInfo(
            paused_at=time.time(),
            duration_ms=int((time.monotonic() - begun) * 1000),
            memory_bytes=pausing.memory_bytes(target),
        )
        return list(meta.snapshots), info


def _disk_from_snapshot(
    manager: TaskManager, source_id: str, snapshot: str, rootfs: Path, target: Path
) -> None:
    """Write the fork's disk as the source's snapshot ``snapshot`` over the rootfs (only
    the differences), with a ``baseline`` snapshot of it. A snapshot's clusters are never
    written in place, so reading it from a running source's disk is safe (``-U``)."""
    exe = shutil.which("qemu-img")
    if exe is None:
        raise VMMError("qemu-img is not installed", "install it with 'apt-get install qemu-utils'")
    dest = target / OVERLAY
    argv = [
        exe, "convert", "-U", "-f", "qcow2", "-O", "qcow2",
        "-l", f"snapshot.name={snapshot}",
        "-B", str(rootfs.absolute()), "-F", "raw",
        str(manager.dir(source_id) / OVERLAY), str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VMMError(f"copying snapshot {snapshot} of task {source_id} timed out") from exc
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VMMError(
            f"cannot copy snapshot {snapshot} of task {source_id}: "
            f"{lines[-1] if lines else proc.returncode}",
            "check free disk space in the state directory",
        )
    create_offline(target, BASELINE)


def _copy(source: Path, dest: Path) -> None:
    """Raises: StateError: the file cannot be copied."""
    try:
        shutil.copyfile(source, dest)
        dest.chmod(0o600)
    except OSError as exc:
        raise StateError(f"cannot copy {source.name} for the fork: {exc}") from exc


def _copy_memory(source: Path, dest: Path) -> None:
    """Copy a sparse RAM file, holes kept. Raises: StateError."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            copy_sparse(fd, dest, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot copy the paused memory for the fork: {exc}") from exc
