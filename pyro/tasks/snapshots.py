"""Disk-level snapshots of a task: qcow2 internal snapshots of the VM's own overlay.

* While the VM runs, a snapshot is taken with QMP ``blockdev-snapshot-internal-sync`` after a
  guest ``sync`` (QEMU drains the disk while it writes the snapshot), so the guest keeps
  running; while it is stopped, ``qemu-img snapshot -c`` does the same offline.
* Applying a snapshot needs the VM stopped: the guest's page cache would otherwise disagree
  with its disk. A reset is therefore stop → ``qemu-img snapshot -a`` → start.
* Deleting: QMP ``blockdev-snapshot-delete-internal-sync`` or ``qemu-img snapshot -d``.

The base rootfs (the overlay's backing file) is never written, so snapshots hold only what
the task changed. Firecracker takes raw disks only; see docs/tasks.md for that path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pyro.errors import BackendUnavailableError, UsageError, VMMError

OVERLAY = "overlay.qcow2"
#: QEMU's name for the root disk (``-drive id=root``) in pyro.vmm.qemu.
DRIVE_ID = "root"
BASELINE = "baseline"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class SnapshotInfo(BaseModel):
    """One snapshot of a task's disk."""

    name: str
    created_at: float
    online: bool  # taken while the VM ran (QMP) rather than stopped (qemu-img)
    duration_ms: int


def check_name(name: str) -> None:
    """Raises: UsageError: the name is not 1-63 of letters, digits, '.', '_', '-'."""
    if not _NAME.match(name):
        raise UsageError(
            f"snapshot name {name!r} is not valid",
            "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def require_qemu(backend_name: str) -> None:
    """Raises: BackendUnavailableError: the task's backend has no qcow2 disk."""
    if not backend_name.startswith("qemu"):
        raise BackendUnavailableError(
            f"snapshots need the QEMU backend; this task runs on {backend_name}",
            "create the task with the QEMU backend (see docs/tasks.md for Firecracker)",
        )


def qemu_img(task_dir: Path, *args: str) -> str:
    """Run ``qemu-img snapshot ARGS overlay.qcow2`` on a stopped VM's disk.

    Raises:
        VMMError: qemu-img is missing or fails.
    """
    exe = shutil.which("qemu-img")
    if exe is None:
        raise VMMError("qemu-img is not installed", "install it with 'apt-get install qemu-utils'")
    disk = task_dir / OVERLAY
    if not disk.is_file():
        raise VMMError(
            f"the task's disk {disk} is missing",
            "the task cannot be restored; delete it and create a new one",
        )
    try:
        proc = subprocess.run(
            [exe, "snapshot", *args, str(disk)], capture_output=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise VMMError(f"qemu-img snapshot {' '.join(args)} timed out on {disk}") from exc
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VMMError(
            f"qemu-img snapshot {' '.join(args)} failed: {lines[-1] if lines else proc.returncode}",
            "check free disk space in the state directory; 'pyro task status ID' shows the task",
        )
    return proc.stdout.decode("utf-8", "replace")


def create_offline(task_dir: Path, name: str) -> None:
    """Raises: VMMError."""
    qemu_img(task_dir, "-c", name)


def apply_offline(task_dir: Path, name: str) -> None:
    """Raises: VMMError."""
    qemu_img(task_dir, "-a", name)


def delete_offline(task_dir: Path, name: str) -> None:
    """Raises: VMMError."""
    qemu_img(task_dir, "-d", name)


def qmp(backend: Any, handle: Any, command: str, **arguments: Any) -> Any:
    """A QMP command through the QEMU backend.

    Raises:
        BackendUnavailableError: the backend has no QMP.
        VMMError: the command failed.
    """
    if not hasattr(backend, "qmp"):
        raise BackendUnavailableError(f"backend {backend.name} has no QMP monitor")
    return backend.qmp(handle, command, **arguments)


def create_online(backend: Any, handle: Any, name: str) -> None:
    """Raises: VMMError."""
    qmp(backend, handle, "blockdev-snapshot-internal-sync", device=DRIVE_ID, name=name)


def delete_online(backend: Any, handle: Any, name: str) -> None:
    """Raises: VMMError."""
    qmp(backend, handle, "blockdev-snapshot-delete-internal-sync", device=DRIVE_ID, name=name)
