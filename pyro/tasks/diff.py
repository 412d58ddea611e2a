"""What changed in a task's workspace since its baseline or a named snapshot.

Computed on the host from the disk, not from what the guest says: both sides are read
offline (:mod:`pyro.tasks.disk`): the snapshot, and the current disk (a running task is
synced and gets a short-lived internal snapshot, deleted at the end). Sizes are bounded:
at most ``PYRO_COPY_OUT_MAX_ENTRIES`` entries and ``PYRO_COPY_OUT_MAX_DEPTH`` levels per
side, :data:`MAX_READ_BYTES` of file data read in all, and a text diff only for files up to
:data:`MAX_TEXT_BYTES`; past these the change is listed without its lines.

Output: a unified diff for text files (``a/`` and ``b/`` prefixes, ``/dev/null`` for added
or removed files: what ``task patch`` and ``git apply`` read), one line per binary, mode or
type change otherwise.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import posixpath
import secrets
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field

from pyro.errors import GuestPathError, LimitError, NotFoundError, UsageError
from pyro.guest.results import GuestStat
from pyro.machines.copyout import CopyLimits
from pyro.machines.registry import VMState
from pyro.tasks import disk
from pyro.tasks.files import guest_path, run_checked
from pyro.tasks.manager import TaskManager
from pyro.tasks.snapshots import (
    BASELINE,
    OVERLAY,
    create_online,
    delete_offline,
    delete_online,
    require_qemu,
)

MAX_TEXT_BYTES = 1 << 20
MAX_READ_BYTES = 256 << 20
Status = Literal["added", "removed", "modified", "mode", "type"]


class FileChange(BaseModel):
    """One changed path (from the workspace)."""

    path: str = Field(description="Path from /workspace.")
    status: Status = Field(description="added, removed, modified, mode or type.")
    kind: str = Field(description="file, directory, symlink or other.")
    old_mode: int | None = Field(None, description="Mode before.")
    new_mode: int | None = Field(None, description="Mode now.")
    binary: bool = Field(False, description="Not text: no line diff.")
    insertions: int = Field(0, description="Lines added.")
    deletions: int = Field(0, description="Lines removed.")


class TaskDiff(BaseModel):
    """``task diff``'s result."""

    task_id: str
    since: str = Field(description="Snapshot compared with.")
    path: str = Field(description="Guest path diffed.")
    changes: list[FileChange] = Field(description="path, status, kind, modes, line counts.")
    diff: str = Field(description="Unified diff, then a line per other change.")
    insertions: int = Field(description="Lines added.")
    deletions: int = Field(description="Lines removed.")


def diff(
    manager: TaskManager, task_id: str, path: str | None = None, *, since: str = BASELINE
) -> TaskDiff:
    """What changed below ``path`` (default the workspace) since snapshot ``since``.

    Raises:
        NotFoundError: no such task or snapshot.  UsageError: a task seeded by data disk.
        LimitError: too many entries.  GuestPathError: a hostile file system.  VMMError.
    """
    record, meta = manager.get(task_id)
    require_qemu(record.backend)
    if not any(s.name == since for s in meta.snapshots):
        names = ", ".join(s.name for s in meta.snapshots) or "none"
        raise NotFoundError(
            f"task {task_id} has no snapshot named {since!r}", f"its snapshots: {names}"
        )
    if meta.seed_disk:
        raise UsageError(
            f"task {task_id}'s workspace is an overlay over its seed disk: diff cannot read it",
            "diff tasks seeded below the data-disk threshold (PYRO_DATA_DISK_MIN_BYTES)",
        )
    root = guest_path(path) if path else meta.workspace
    limits = CopyLimits.from_env()
    overlay = manager.dir(task_id) / OVERLAY
    with disk.opened(overlay, snapshot=since) as old_disk, _current(manager, task_id) as new_disk:
        old_base, old = _walk(old_disk, root, limits)
        new_base, new = _walk(new_disk, root, limits)
        base = new_base if new else old_base
        # Paths are shown from the workspace (what 'task patch' takes), else from /.
        prefix = posixpath.relpath(base, meta.workspace)
        if prefix == "." or prefix.startswith(".."):
            prefix = "" if prefix == "." else base.lstrip("/")
        sides = _Sides(old_disk, new_disk, base, prefix)
        return _compare(task_id, since, root, sides, old, new)


@contextlib.contextmanager
def _current(manager: TaskManager, task_id: str) -> Iterator[disk.DiskReader]:
    """A reader of the task's disk as it is now."""
    from pyro.tasks.ops import _backend_and_handle  # the snapshot plumbing of task ops

    overlay = manager.dir(task_id) / OVERLAY
    with contextlib.ExitStack() as stack:
        with manager.registry.locked(task_id):  # copied before anything can boot it
            stopped = manager.get(task_id)[0].state is not VMState.RUNNING
            reader = stack.enter_context(disk.opened(overlay)) if stopped else None
        if reader is not None:
            yield reader
            return
    name = f"pyro-diff-{secrets.token_hex(4)}"
    with manager.session(task_id) as client:
        run_checked(client, ["sync"])
        record, _ = manager.get(task_id)
        create_online(*_backend_and_handle(record), name)
    try:
        with disk.opened(overlay, snapshot=name) as reader:
            yield reader
    finally:
        with manager.registry.locked(task_id):
            record, _ = manager.get(task_id)
            with contextlib.suppress(Exception):
                if record.state is VMState.RUNNING and record.handle is not None:
                    delete_online(*_backend_and_handle(record), name)
                else:
                    delete_offline(manager.dir(task_id), name)


def _walk(
    reader: disk.DiskReader, root: str, limits: CopyLimits
) -> tuple[str, dict[str, GuestStat]]:
    """The folder the paths start from, and every entry below ``root`` by relative path
    (``{}`` when it does not exist; a file is one entry in its folder).

    Raises:
        LimitError: more entries or levels than the copy-out caps.
    """
    try:
        top = reader.stat(root)
    except GuestPathError:
        return root, {}
    if top.kind != "d":
        return posixpath.dirname(root), {posixpath.basename(root): top}
    out: dict[str, GuestStat] = {}
    pending: list[tuple[str, int]] = [("", 0)]
    while pending:
        rel, depth = pending.pop()
        for entry in reader.list_dir(posixpath.join(root, rel) if rel else root):
            path = posixpath.join(rel, entry.name) if rel else entry.name
            out[path] = entry
            if len(out) > limits.max_entries:
                raise LimitError(
                    f"{root} holds more than {limits.max_entries} entries",
                    "diff a smaller folder (PATH), or raise PYRO_COPY_OUT_MAX_ENTRIES",
                )
            if entry.kind == "d":
                if depth + 1 > limits.max_depth:
                    raise LimitError(f"{root}/{path} is nested too deep to diff")
                pending.append((path, depth + 1))
    return root, out


_KIND = {"f": "file", "d": "directory", "l": "symlink"}


class _Sides:
    def __init__(self, old: disk.DiskReader, new: disk.DiskReader, base: str, prefix: str) -> None:
        self.old, self.new, self.base, self.prefix = old, new, base, prefix


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_READ_BYTES

    def read(self, reader: disk.DiskReader, path: str, size: int) -> bytes | None:
        """The file's bytes, or None when it is too large to diff or the budget is spent."""
        if size > MAX_TEXT_BYTES or size > self.left:
            return None
        out = io.BytesIO()
        reader.get_file(path, out, max_bytes=size)
        self.left -= size
        return out.getvalue()


def _text(data: bytes | None) -> list[str] | None:
    if data is None or b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _compare(
    task_id: str,
    since: str,
    root: str,
    sides: _Sides,
    old: dict[str, GuestStat],
    new: dict[str, GuestStat],
) -> TaskDiff:
    budget = _Budget()
    changes: list[FileChange] = []
    text: list[str] = []
    notes: list[str] = []

    def full(rel: str) -> str:
        return posixpath.join(sides.base, rel)

    for rel in sorted(old.keys() | new.keys()):
        before, after = old.get(rel), new.get(rel)
        shown = _shown(posixpath.join(sides.prefix, rel) if sides.prefix else rel)
        if before is not None and after is not None and before.kind != after.kind:
            kinds = f"{_KIND.get(before.kind, 'other')} -> {_KIND.get(after.kind, 'other')}"
            changes.append(
                FileChange(path=shown, status="type", kind=_KIND.get(after.kind, "other"))
            )
            notes.append(f"type {kinds} {shown}")
            continue
        entry = after or before
        assert entry is not None
        kind = _KIND.get(entry.kind, "other")
        change = FileChange(
            path=shown,
            status="added" if before is None else "removed" if after is None else "modified",
            kind=kind,
            old_mode=None if before is None else before.mode,
            new_mode=None if after is None else after.mode,
        )
        if entry.kind == "d":
            if before is None or after is None:
                changes.append(change)
                notes.append(f"{change.status} folder {shown}/")
            elif before.mode != after.mode:
                changes.append(change.model_copy(update={"status": "mode"}))
                notes.append(f"mode {before.mode:o} -> {after.mode:o} {shown}/")
            continue
        if entry.kind == "l":
            if before is not None and after is not None and before.link_target == after.link_target:
                continue
            changes.append(change)
            old_t = "" if before is None else f" {_shown(before.link_target or '')}"
            new_t = "" if after is None else f" -> {_shown(after.link_target or '')}"
            notes.append(f"{change.status} symlink {shown}{old_t}{new_t}")
            continue
        if entry.kind != "f":
            changes.append(change)
            notes.append(f"{change.status} {kind} {shown}")
            continue
        a = None if before is None else budget.read(sides.old, full(rel), before.size)
        b = None if after is None else budget.read(sides.new, full(rel), after.size)
        same_data = before is not None and after is not None and a is not None and a == b
        if same_data:
            if before is not None and after is not None and before.mode != after.mode:
                changes.append(change.model_copy(update={"status": "mode"}))
                notes.append(f"mode {before.mode:o} -> {after.mode:o} {shown}")
            continue
        lines_a = [] if before is None else _text(a)
        lines_b = [] if after is None else _text(b)
        if lines_a is None or lines_b is None:
            too_big = (before is not None and a is None) or (after is not None and b is None)
            change.binary = not too_big
            changes.append(change)
            what = "large file" if too_big else "binary file"
            notes.append(f"{change.status} {what} {shown}")
            continue
        body = list(
            difflib.unified_diff(
                lines_a,
                lines_b,
                "/dev/null" if before is None else f"a/{shown}",
                "/dev/null" if after is None else f"b/{shown}",
            )
        )
        body = [ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in body]
        change.insertions = sum(1 for ln in body if ln.startswith("+") and not ln.startswith("+++"))
        change.deletions = sum(1 for ln in body if ln.startswith("-") and not ln.startswith("---"))
        changes.append(change)
        text.extend(body)
        if before is not None and after is not None and before.mode != after.mode:
            notes.append(f"mode {before.mode:o} -> {after.mode:o} {shown}")
    return TaskDiff(
        task_id=task_id,
        since=since,
        path=root,
        changes=changes,
        diff="".join(text) + "".join(f"{note}\n" for note in notes),
        insertions=sum(c.insertions for c in changes),
        deletions=sum(c.deletions for c in changes),
    )


def _shown(name: str) -> str:
    """A disk name made printable (bad bytes as U+FFFD; a newline cannot occur: the
    listing refuses it)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
