"""Applying a unified diff to a task's files, all or nothing.

The diff is parsed with ``unidiff`` and applied in memory, hunk by hunk, at the line
numbers it states with its context matching exactly (no offset, no fuzz: a patch made
against other contents fails rather than landing in the wrong place). When any hunk
fails, every failing hunk is reported and nothing in the guest is touched. Otherwise the
new contents go to temporary files next to their targets first, and one command then
renames them all into place and removes the deleted files, so a write failure half-way
leaves the workspace as it was.

Paths in the diff are taken from the workspace (``a/``/``b/`` prefixes stripped);
``/dev/null`` marks an added or removed file. Modified files keep their mode, new ones get
``0644``.
"""

from __future__ import annotations

import io
import posixpath
import secrets
from typing import Any

from pydantic import BaseModel, Field

from pyro.errors import GuestPathError, UsageError
from pyro.tasks.files import guest_path, run_checked
from pyro.tasks.manager import TaskManager

#: The largest file a patch reads or writes.
MAX_FILE_BYTES = 16 << 20
#: The largest diff accepted.
MAX_PATCH_BYTES = 64 << 20
#: The most bytes of guest files one patch reads (the host holds them until it writes).
MAX_TOTAL_BYTES = 256 << 20


class FailedHunk(BaseModel):
    """A hunk that does not apply."""

    path: str = Field(description="Path in the patch.")
    hunk: int = Field(description="Hunk number in that file, from 1.")
    reason: str = Field(description="Why it does not apply.")


class PatchResult(BaseModel):
    """What ``task patch`` did (``applied`` false: nothing was touched)."""

    task_id: str
    applied: bool = Field(description="False: a hunk failed, nothing changed.")
    files: list[str] = Field(description="Paths changed.")
    failed: list[FailedHunk] = Field(description="Failed hunks: path, hunk, reason.")


def apply(manager: TaskManager, task_id: str, patch: bytes) -> PatchResult:
    """Apply the unified diff ``patch`` to the task's files (booting or resuming it).

    Raises:
        UsageError: not a unified diff, a path it cannot name, too large (or its files
            together are), a target that is not a UTF-8 text file.
        NotFoundError: no such task.  GuestError: the guest failed to write.
    """
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    if len(patch) > MAX_PATCH_BYTES:
        raise UsageError(f"the patch has {len(patch)} bytes; at most {MAX_PATCH_BYTES}")
    try:
        text = patch.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("the patch is not UTF-8 text", "give a unified diff") from exc
    _, meta = manager.get(task_id)
    try:
        parsed = PatchSet(text)
    except UnidiffParseError as exc:
        raise UsageError(f"the patch cannot be read: {exc}", "give a unified diff") from exc
    if not any(len(f) for f in parsed):
        raise UsageError("the patch holds no hunks", "give a unified diff ('diff -u', 'git diff')")
    failed: list[FailedHunk] = []
    results: dict[str, bytes | None] = {}  # guest path -> new content (None: removed)
    modes: dict[str, int] = {}
    total = 0  # bytes of guest files read
    with manager.session(task_id) as client:
        for item in parsed:
            path = _path(item.path, meta.workspace)
            shown = item.path
            if item.is_added_file:
                if _exists(client, path):
                    failed.append(FailedHunk(path=shown, hunk=1, reason="the file exists already"))
                    continue
                source: list[str] = []
            else:
                read = _read(client, path, modes)
                if read is None:
                    failed.append(FailedHunk(path=shown, hunk=1, reason="the file does not exist"))
                    continue
                total += len(read)
                if total > MAX_TOTAL_BYTES:
                    raise UsageError(
                        f"the patch reads more than {MAX_TOTAL_BYTES} bytes of files in the "
                        f"guest (reached at {shown[:200]!r}); nothing was changed",
                        "split it into smaller patches",
                    )
                source = read.splitlines(keepends=True)
            lines, failures = _apply(source, item)
            failed.extend(FailedHunk(path=shown, hunk=n, reason=r) for n, r in failures)
            if not failures:
                results[path] = None if item.is_removed_file else "".join(lines).encode()
        if failed:
            return PatchResult(task_id=task_id, applied=False, files=[], failed=failed)
        _write_all(client, results, modes)
    manager.touch(task_id)
    return PatchResult(task_id=task_id, applied=True, files=sorted(results), failed=[])


def _path(name: str, workspace: str) -> str:
    """Raises: UsageError: the diff names a path pyro cannot use."""
    if not name or "\0" in name:
        raise UsageError(f"the patch names a bad path {name!r}")
    return guest_path(name, workspace)


def _sides(hunk: Any) -> tuple[list[str], list[str]]:
    """The hunk's old lines (context and removed) and new lines (context and added), a
    ``\\ No newline at end of file`` marker taking the newline off the line before it."""
    old: list[str] = []
    new: list[str] = []
    last: list[str] | None = None
    for line in hunk:
        if line.line_type == "\\":
            if last:
                last[-1] = last[-1].removesuffix("\n")
            continue
        if line.line_type in (" ", "-"):
            old.append(line.value)
        if line.line_type in (" ", "+"):
            new.append(line.value)
        last = old if line.line_type == "-" else new
        if line.line_type == " ":
            last = None  # a context line ends both sides; rare at the end of a file
    return old, new


def _apply(source: list[str], patched: Any) -> tuple[list[str], list[tuple[int, str]]]:
    """The patched lines, and (hunk number, reason) of each hunk that does not apply."""
    out: list[str] = []
    failures: list[tuple[int, str]] = []
    pos = 0
    for number, hunk in enumerate(patched, 1):
        old, new = _sides(hunk)
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        if start < pos:
            failures.append((number, "it overlaps the hunk before it"))
            continue
        if source[start : start + len(old)] != old:
            end = hunk.source_start + max(hunk.source_length, 1) - 1
            failures.append(
                (number, f"lines {hunk.source_start}-{end} are not what the hunk expects")
            )
            continue
        out += source[pos:start] + new
        pos = start + len(old)
    return out + source[pos:], failures


def _read(client: Any, path: str, modes: dict[str, int]) -> str | None:
    """The file's text, None when it does not exist.

    Raises:
        UsageError: not a text file, or too large.
    """
    try:
        info = client.stat(path)
    except GuestPathError:
        return None
    if info.kind != "f":
        raise UsageError(f"{path} is not a regular file in the guest", "patch regular files")
    out = io.BytesIO()
    client.get_file(path, out, max_bytes=MAX_FILE_BYTES)
    modes[path] = info.mode & 0o7777
    try:
        return out.getvalue().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text", "patch text files only") from exc


def _exists(client: Any, path: str) -> bool:
    try:
        client.stat(path)
    except GuestPathError:
        return False
    return True


def _write_all(client: Any, results: dict[str, bytes | None], modes: dict[str, int]) -> None:
    """Write every new content to a temp name beside its target, then rename all (and
    remove the removed files) in one command; temp files are removed on failure."""
    tag = secrets.token_hex(4)
    moves: list[tuple[str, str]] = []
    try:
        for path, data in results.items():
            if data is None:
                continue
            temp = posixpath.join(posixpath.dirname(path), f".pyro-patch-{tag}-{len(moves)}")
            client.put_file(temp, io.BytesIO(data), mode=modes.get(path, 0o644))
            moves.append((temp, path))
    except BaseException:
        if moves:
            run_checked(client, ["rm", "-f", "--", *(t for t, _ in moves)])
        raise
    script = (
        'while [ "$#" -gt 0 ]; do if [ "$1" = rm ]; then rm -f -- "$2";'
        ' else mv -f -- "$2" "$3"; shift; fi; shift 2; done'
    )
    argv: list[str] = []
    for temp, path in moves:
        argv += ["mv", temp, path]
    for path, data in results.items():
        if data is None:
            argv += ["rm", path]
    run_checked(client, ["sh", "-c", script, "patch", *argv])
