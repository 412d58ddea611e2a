"""Moving files between the host and a task's guest through the agent's file protocol.

Contents never travel in a command line: files go through ``put_file``/``get_file`` (binary
safe, streamed in chunks, any size). Commands are used only for what the file protocol
cannot express: creating empty directories and symlinks, with argv lists (no shell).

A host folder is scanned before anything is sent (:func:`scan_tree`), so a folder that is
too large or holds a symlink leaving it is refused before a VM boots.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from pyro.errors import GuestError, GuestPathError, LimitError, UsageError
from pyro.guest.protocol import shown_name
from pyro.machines import datadisk
from pyro.machines.copyout import (
    CopyBudget,
    CopyLimits,
    CopyRules,
    GuestFiles,
    copy_file,
    copy_tree,
)

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

WORKSPACE = "/workspace"
DEFAULT_SEED_MAX_BYTES = 256 * 1024 * 1024
#: Files sent at once; the agent serves requests concurrently and small files are
#: dominated by round trips.
UPLOAD_THREADS = 4
_ARGV_BATCH = 200
_SPECIAL = {"p": "fifo", "s": "socket", "c": "device", "b": "device"}


def seed_max_bytes() -> int:
    """``$PYRO_TASK_SEED_MAX_MB`` in bytes, or 256 MiB."""
    raw = os.environ.get("PYRO_TASK_SEED_MAX_MB", "")
    return int(raw) * 1024 * 1024 if raw.isdigit() else DEFAULT_SEED_MAX_BYTES


def guest_path(path: str, base: str = WORKSPACE) -> str:
    """An absolute, normalized guest path; relative paths are taken from ``base``.

    Raises:
        GuestPathError: empty or containing a NUL byte.
    """
    if not path or "\0" in path:
        raise GuestPathError(f"guest path {path!r} is empty or contains a NUL byte")
    joined = path if path.startswith("/") else posixpath.join(base, path)
    return posixpath.normpath(joined).replace("//", "/")


class SyncResult(BaseModel):
    """What a seed or ``sync push`` sent."""

    source: str
    dest: str
    files: int
    directories: int
    symlinks: int
    bytes: int
    skipped: list[str] = []


class FileEntry(BaseModel):
    """One entry of a guest directory listing."""

    name: str
    path: str
    kind: str  # file, directory, symlink, fifo, socket, device, other
    mode: int
    size: int
    mtime: float
    link_target: str | None = None


_KINDS = {"f": "file", "d": "directory", "l": "symlink", "p": "fifo", "s": "socket"}


def kind_name(code: str) -> str:
    return _KINDS.get(code, "device" if code in ("c", "b") else "other")


@dataclass
class TreePlan:
    """A scanned host folder: what to create in the guest, relative to its root."""

    root: Path
    dirs: list[str] = field(default_factory=list)
    files: list[tuple[str, int, int]] = field(default_factory=list)  # rel, size, mode
    links: list[tuple[str, str]] = field(default_factory=list)  # rel, target
    skipped: list[str] = field(default_factory=list)
    total_bytes: int = 0


def scan_tree(root: Path, *, max_bytes: int | None = None) -> TreePlan:
    """Walk ``root`` without following symlinks.

    Raises:
        UsageError: ``root`` is not a folder, or a symlink in it points outside it.
        LimitError: its files add up to more than ``max_bytes``.
    """
    limit = seed_max_bytes() if max_bytes is None else max_bytes
    try:
        real_root = root.expanduser().resolve(strict=True)
    except OSError as exc:
        raise UsageError(f"seed folder {root} does not exist", "give an existing folder") from exc
    if not real_root.is_dir():
        raise UsageError(f"{root} is not a folder", "give a folder to copy into the task")
    plan = TreePlan(root=real_root)
    for rel, st in _walk(real_root):
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            plan.dirs.append(rel)
        elif stat.S_ISREG(mode):
            plan.files.append((rel, st.st_size, stat.S_IMODE(mode)))
            plan.total_bytes += st.st_size
            if plan.total_bytes > limit:
                raise LimitError(
                    f"{root} holds more than {limit // (1 << 20)} MiB of files (reached at {rel})",
                    "copy a smaller folder (large files can follow with 'pyro task file write'), "
                    "or raise PYRO_TASK_SEED_MAX_MB",
                )
        elif stat.S_ISLNK(mode):
            plan.links.append((rel, _link_target(real_root, rel, root)))
        else:
            plan.skipped.append(rel)
    return plan


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise UsageError(f"cannot read folder {root / rel_dir}: {exc.strerror}") from exc
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise UsageError(f"cannot read {root / rel}: {exc.strerror}") from exc
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)


def _link_target(real_root: Path, rel: str, shown_root: Path) -> str:
    link = real_root / rel
    target = os.readlink(link)
    resolved = Path(os.path.normpath(link.parent / target))
    with contextlib.suppress(OSError):
        resolved = (link.parent / target).resolve()
    if resolved != real_root and real_root not in resolved.parents:
        raise UsageError(
            f"symlink {shown_root / rel} -> {target} points outside {shown_root}",
            "remove the link or replace it by the file it points to; links that leave the "
            "folder are refused so no other host file is copied by accident",
        )
    # Recreated relative to the link, so it means the same inside the guest.
    return os.path.relpath(resolved, link.parent)


def upload_tree(client: AgentClient, plan: TreePlan, dest: str, source: str) -> SyncResult:
    """Create ``plan`` under the guest folder ``dest``.

    Raises:
        GuestError: the agent refused a file or a command failed.
    """
    dirs = [dest] + [posixpath.join(dest, rel) for rel in plan.dirs]
    for start in range(0, len(dirs), _ARGV_BATCH):
        run_checked(client, ["mkdir", "-p", "--", *dirs[start : start + _ARGV_BATCH]])

    def put(item: tuple[str, int, int]) -> int:
        rel, _size, mode = item
        return client.put_file(posixpath.join(dest, rel), plan.root / rel, mode=mode)

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        sent = sum(pool.map(put, plan.files))
    for rel, target in plan.links:
        run_checked(client, ["ln", "-sfn", "--", target, posixpath.join(dest, rel)])
    return tree_result(plan, dest, source, sent)


def tree_result(plan: TreePlan, dest: str, source: str, sent: int) -> SyncResult:
    """What copying ``plan`` to ``dest`` sent, ``sent`` bytes of file content."""
    return SyncResult(
        source=source,
        dest=dest,
        files=len(plan.files),
        directories=len(plan.dirs),
        symlinks=len(plan.links),
        bytes=sent,
        skipped=plan.skipped,
    )


def tree_entries(plan: TreePlan) -> list[datadisk.Entry]:
    """``plan`` as data-disk entries (:mod:`pyro.machines.datadisk`): the folders, files,
    modes and symlinks :func:`upload_tree` creates."""
    entries = [datadisk.Entry(rel, "d") for rel in plan.dirs]
    entries += [
        datadisk.Entry(rel, "f", plan.root / rel, mode, size) for rel, size, mode in plan.files
    ]
    entries += [datadisk.Entry(rel, "l", target=target) for rel, target in plan.links]
    return entries


def run_checked(client: AgentClient, argv: list[str]) -> None:
    """Run a helper command in the guest, as root (pyro's own housekeeping, whatever user
    an image environment runs commands as).

    Raises:
        GuestError: it failed (its stderr is in the message).
    """
    result = client.exec(argv, timeout_s=120.0, stdout_cap=4096, stderr_cap=4096, uid=0, gid=0)
    if result.exit_code != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GuestError(
            f"'{argv[0]}' failed in the guest (exit {result.exit_code}): "
            f"{detail[-1] if detail else 'no message'}",
            "check the guest path and free space in the guest",
        )


def list_entries(client: GuestFiles, path: str) -> list[FileEntry]:
    """The entries of a guest directory; a file lists as itself.

    Raises:
        GuestPathError: the path does not exist.
    """
    top = client.stat(path)
    stats = client.list_dir(path) if top.kind == "d" else [top]
    base = path if top.kind == "d" else posixpath.dirname(path)
    # Shown, not used as host names: bytes that are not UTF-8 print as U+FFFD.
    return [
        FileEntry(
            name=shown_name(s.name) if top.kind == "d" else posixpath.basename(path),
            path=shown_name(posixpath.join(base, s.name)) if top.kind == "d" else path,
            kind=kind_name(s.kind),
            mode=s.mode & 0o7777,
            size=s.size,
            mtime=s.mtime_ns / 1e9,
            link_target=None if s.link_target is None else shown_name(s.link_target),
        )
        for s in stats
    ]


def export_path(
    client: GuestFiles,
    path: str,
    output: Path,
    *,
    limits: CopyLimits | None = None,
    include_git: bool = False,
) -> SyncResult:
    """Copy a guest file or folder to ``output`` on the host (written atomically per file).

    Written by :mod:`pyro.machines.copyout`: guest names are checked before anything is written;
    nothing below ``output`` is written through a symlink (links already there are
    replaced); guest symlinks are recreated only when they stay inside the exported folder;
    special files and other links are skipped and listed in ``skipped``; the guest's rwx
    bits are kept minus the umask (never setuid/setgid/sticky); ``limits`` (default
    ``$PYRO_COPY_OUT_MAX_BYTES``/``_ENTRIES``/``_DEPTH``) caps what is written. Git
    metadata (``.git``, folders laid out as git folders) is skipped and listed in
    ``skipped``, and an ``output`` in a ``.git`` folder is refused, unless ``include_git``:
    a guest-written hook or ``core.fsmonitor`` runs at the user's next git command.

    Raises:
        GuestPathError: the guest path does not exist, the guest listed a bad name, a
            guest path is too long, or ``path`` is laid out as a git folder.
        LimitError: the export would pass a byte, entry or depth cap.
        UsageError: ``path`` is not a file or folder in the guest; ``output`` exists as
            another kind (a file where a folder goes), cannot be written, or is in a
            ``.git`` folder.
    """
    top = client.stat(path)
    rules = CopyRules(
        what=f"export of {path}",
        host_error=UsageError,
        hint="choose an output path in a writable folder (a file where the guest has a "
        "folder, or a folder where it has a file, must be moved away first)",
        budget=CopyBudget(limits or CopyLimits.from_env()),
        guest_modes=True,
        symlinks=True,
        git=include_git,
        git_hint="export the working files only; to copy git metadata from a guest you "
        "trust, pass --include-git (SDK: include_git=True)",
    )
    result = SyncResult(source=path, dest=str(output), files=0, directories=0, symlinks=0, bytes=0)
    if top.kind == "d":
        report = copy_tree(client, path, output, rules)
    elif top.kind == "f":
        # Like cp: a file exported to an existing folder lands inside it.
        if output.is_dir():
            folder, name = output, posixpath.basename(path)
        else:
            folder, name = output.parent, output.name
        result.dest = str(folder / name)
        report = copy_file(client, path, top, folder, name, rules)
    else:
        raise UsageError(
            f"{path} is a {kind_name(top.kind)} in the guest, not a file or folder",
            "export a regular file or a folder (a symlink is not followed: export what it "
            "points to)",
        )
    result.files = report.files
    result.directories = report.directories
    result.symlinks = report.symlinks
    result.bytes = report.bytes
    result.skipped = report.skipped
    return result
