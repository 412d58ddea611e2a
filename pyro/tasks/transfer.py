"""Files in and out of a task: each operation opens a session of the task (booting a stopped
task), checks the guest path, and does its work with :mod:`pyro.tasks.files`. Reads (read,
list, export) of a stopped or paused task do not boot it: they read its disk
(:mod:`pyro.tasks.disk`).

Relative guest paths are taken from ``/workspace``. Host paths arrive already checked by
the caller (the SDK confines them when asked to).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydantic import BaseModel

from pyro.tasks.files import (
    FileEntry,
    SyncResult,
    export_path,
    guest_path,
    list_entries,
    scan_tree,
    tree_entries,
    tree_result,
    upload_tree,
)

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.tasks.disk import DiskReader
    from pyro.tasks.files import TreePlan
    from pyro.tasks.manager import TaskManager


@contextlib.contextmanager
def offline(manager: TaskManager, task_id: str) -> Iterator[DiskReader | None]:
    """A reader of the task's disk when it is stopped or paused, else None (the caller
    uses the agent). None also for a task whose workspace is a seed data disk (an overlay
    mount the disk alone does not show) and for backends without a qcow2 disk.

    Raises:
        NotFoundError: no such task.  VMMError: the disk cannot be read.
    """
    from pyro.machines.registry import VMState
    from pyro.tasks import disk
    from pyro.tasks.snapshots import OVERLAY

    record, meta = manager.get(task_id)
    if record.state is VMState.RUNNING or meta.seed_disk or not record.backend.startswith("qemu"):
        yield None
        return
    with contextlib.ExitStack() as stack:
        with manager.registry.locked(task_id):  # no boot writes the disk while it is copied
            if manager.get(task_id)[0].state is VMState.RUNNING:
                reader = None
            else:
                reader = stack.enter_context(disk.opened(manager.dir(task_id) / OVERLAY))
        yield reader


class TaskFileWritten(BaseModel):
    task_id: str
    path: str
    bytes: int


def read_file(
    manager: TaskManager, task_id: str, path: str, dst: BinaryIO, *, max_bytes: int | None = None
) -> int:
    """Stream a guest file into ``dst``; returns its size.

    Raises:
        NotFoundError: no such task.  GuestPathError: no such file.
        LimitError: larger than ``max_bytes``.
    """
    target = guest_path(path)
    with offline(manager, task_id) as reader:
        if reader is not None:
            return reader.get_file(target, dst, max_bytes=max_bytes)
    with manager.session(task_id) as client:
        return client.get_file(target, dst, max_bytes=max_bytes)


def write_file(
    manager: TaskManager, task_id: str, path: str, data: bytes | BinaryIO | Path, *, mode: int
) -> TaskFileWritten:
    """Write ``data`` (bytes, a binary stream or a host file) to a guest path, atomically;
    parent folders are created.

    Raises:
        NotFoundError: no such task.  GuestPathError: the path cannot be written.
    """
    target = guest_path(path)
    src: BinaryIO | Path = io.BytesIO(data) if isinstance(data, bytes) else data
    with manager.session(task_id) as client:
        size = client.put_file(target, src, mode=mode)
    manager.touch(task_id)
    return TaskFileWritten(task_id=task_id, path=target, bytes=size)


def list_files(manager: TaskManager, task_id: str, path: str) -> list[FileEntry]:
    """The entries of a guest folder (a file lists as itself).

    Raises:
        NotFoundError: no such task.  GuestPathError: no such path.
    """
    target = guest_path(path)
    with offline(manager, task_id) as reader:
        if reader is not None:
            return list_entries(reader, target)
    with manager.session(task_id) as client:
        return list_entries(client, target)


def push_dir(manager: TaskManager, task_id: str, source: str, dest: str) -> SyncResult:
    """Copy the host folder ``source`` into the guest folder ``dest`` (same rules as the
    seed: scanned, and refused when too large or holding an escaping symlink, before the
    task is touched).

    Raises:
        NotFoundError: no such task.  UsageError: bad folder or escaping symlink.
        LimitError: too large.
    """
    plan = scan_tree(Path(source))
    target = guest_path(dest)
    with manager.session(task_id) as client:
        sent = _push_by_disk(manager, task_id, client, plan, target)
        if sent is None:
            result = upload_tree(client, plan, target, source)
        else:
            result = tree_result(plan, target, source, sent)
    manager.touch(task_id)
    return result


def by_disk(backend: str, spare_disk: bool, plan: TreePlan) -> bool:
    """Whether a push of ``plan`` into a running task goes by its spare disk
    (:mod:`pyro.machines.pushdisk`): the task has a spare and
    :func:`pyro.machines.pushdisk.wanted` says so.

    Raises:
        UsageError: a bad ``$PYRO_DATA_DISK_MIN_BYTES``.
    """
    from pyro.machines import pushdisk

    return spare_disk and pushdisk.wanted(backend, len(plan.files), plan.total_bytes)


def _push_by_disk(
    manager: TaskManager, task_id: str, client: AgentClient, plan: TreePlan, dest: str
) -> int | None:
    """Push ``plan`` to ``dest`` through the task's spare disk; the bytes sent, or None
    when the push goes through the agent instead (:func:`by_disk` said no, or the guest
    lacks ``tar``).

    Raises:
        UsageError, VMMError, GuestError: see :func:`pyro.machines.pushdisk.push`.
    """
    from filelock import FileLock

    from pyro import paths
    from pyro.machines import pushdisk
    from pyro.vmm import get_backend
    from pyro.vmm.base import VMHandle

    record, meta = manager.get(task_id)
    if not by_disk(record.backend, meta.spare_disk, plan):
        return None
    lock = manager.registry.lock_path(f"task-{task_id}.spare")
    with FileLock(str(lock), mode=paths.PRIVATE_FILE_MODE):  # one medium at a time
        record, _ = manager.get(task_id)
        if record.handle is None:
            return None
        backend, handle = get_backend(record.backend), VMHandle.from_dict(record.handle)
        swap = getattr(backend, "swap_spare", None)
        if swap is None:
            return None
        return pushdisk.push(
            client,
            tree_entries(plan),
            manager.dir(task_id),
            dest,
            lambda image: swap(handle, image),
        )


def export(
    manager: TaskManager,
    task_id: str,
    path: str,
    output: Path | Callable[[], Path],
    *,
    include_git: bool = False,
) -> SyncResult:
    """Copy a guest file or folder to ``output`` on the host (:func:`files.export_path`;
    git metadata only with ``include_git``). A callable ``output`` is asked for the path
    once the task is found (a confined caller's fresh folder is made only then).

    Raises:
        NotFoundError: no such task.  GuestPathError: no such guest path.
        UsageError: ``output`` cannot be written, or is in a ``.git`` folder.
        LimitError: the export would pass a copy-out cap.
    """
    target = guest_path(path)
    with offline(manager, task_id) as reader:
        if reader is not None:
            dest = output() if callable(output) else output
            return export_path(reader, target, dest, include_git=include_git)
    with manager.session(task_id) as client:
        dest = output() if callable(output) else output
        return export_path(client, target, dest, include_git=include_git)
