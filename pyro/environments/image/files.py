"""Host files an image-based Environment spec adds to the root filesystem (``files:``).

Each entry copies a host file or folder (relative to the spec's folder) to an absolute
path of the image. The host side is untrusted input, checked as everywhere in pyro: a
source must stay inside the spec's folder once its links are resolved, may not itself be
a symlink, and a folder may hold only regular files, folders and symlinks whose target
stays inside the copied folder; device nodes, fifos and sockets are refused; the total
size and number of entries are capped. Everything lands owned by root with the host's
permission bits (setuid, setgid and sticky bits dropped).

The image side: the parents of a target must be folders of the image (a path under one of
the image's symlinks, such as ``/bin`` → ``usr/bin``, is refused with the real folder to
name instead), and all writes go to the tree's staging folder with ``O_NOFOLLOW``, which
only ever holds real folders on the way to any path (:mod:`.layers`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyro.environments.image.layers import MAX_NAME, MAX_PATH, Entry, Tree
from pyro.errors import SpecError, SpecIssue
from pyro.spec.model import FileCopy

MAX_BYTES = 1 << 30
"""Bytes of file contents all of a spec's ``files`` may add together."""
MAX_ENTRIES = 100_000
"""Files, folders and symlinks all of a spec's ``files`` may add together."""
MAX_DEPTH = 128
"""Folder levels a copied folder may nest."""
_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Item:
    """One path to add: ``rel`` below the copy's target ("" is the target itself)."""

    rel: str
    kind: Literal["file", "dir", "symlink"]
    host: Path
    mode: int
    mtime: int
    link: str = ""


def _refuse(index: int, message: str, hint: str) -> SpecError:
    issue = SpecIssue(message, pointer=f"/spec/files/{index}/source")
    return SpecError([issue], hint)


def _walk(copy: FileCopy, index: int, spec_dir: Path) -> Iterator[_Item]:
    """The checked host paths of one ``files`` entry, parents before children."""
    where = f"files[{index}].source {copy.source!r}"
    root = Path(os.path.realpath(spec_dir))
    path = spec_dir / copy.source.rstrip("/")
    try:
        info = os.lstat(path)
        # The source itself is not resolved (it must not be a link), its parent is; but a
        # last part ".." is the parent of whatever its own parent resolves to ("link/..").
        last_is_up = path.name == ".."
        resolved = Path(os.path.realpath(path if last_is_up else path.parent))
        resolved = resolved if last_is_up else resolved / path.name
    except OSError as exc:
        raise _refuse(
            index,
            f"{where} cannot be read: {exc.strerror or exc}",
            "a source is a file or folder relative to the spec's folder",
        ) from exc
    if resolved != root and not resolved.is_relative_to(root):
        raise _refuse(
            index,
            f"{where} lies outside the spec's folder once its links are resolved "
            f"({resolved}); refused",
            "copy files from inside the spec's folder",
        )
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(
            index,
            f"{where} is a symlink; refused",
            "name the file or folder it points to (inside the spec's folder)",
        )
    _checked_name(path.name, "", index, where)
    yield from _items(path, "", info, index, where)


def _checked_name(name: str, rel: str, index: int, where: str) -> str:
    """``name`` if the image can hold it and the ext4 writer's script can name it."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        size = -1
    if size < 0 or "\n" in name or "\r" in name or size > MAX_NAME:
        raise _refuse(
            index,
            f"{where}: the name {name[:80]!r} in {rel or '.'} is not UTF-8, holds a line "
            f"break or is longer than {MAX_NAME} bytes; refused",
            "rename it on the host",
        )
    return name


def _items(
    path: Path, rel: str, info: os.stat_result, index: int, where: str, depth: int = 0
) -> Iterator[_Item]:
    if depth > MAX_DEPTH or len(rel) > MAX_PATH // 2:
        raise _refuse(
            index,
            f"{where}: {rel[:80]}… nests deeper than {MAX_DEPTH} folders or is too long; refused",
            "copy a shallower tree",
        )
    mode, mtime = stat.S_IMODE(info.st_mode) & 0o777, int(info.st_mtime)
    if stat.S_ISREG(info.st_mode):
        yield _Item(rel, "file", path, mode, mtime)
        return
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(
            index,
            f"{where}: {rel or '.'} is a special file (device, fifo or socket); refused",
            "copy only regular files, folders and symlinks",
        )
    yield _Item(rel, "dir", path, mode, mtime)
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise _refuse(
            index, f"{where}: cannot list {rel or '.'}: {exc.strerror or exc}", ""
        ) from exc
    for name in names:
        _checked_name(name, rel, index, where)
        child, child_rel = path / name, f"{rel}/{name}" if rel else name
        try:
            child_info = os.lstat(child)
            link = os.readlink(child) if stat.S_ISLNK(child_info.st_mode) else ""
        except OSError as exc:
            message = f"{where}: cannot read {child_rel}: {exc.strerror or exc}"
            raise _refuse(index, message, "make it readable, or leave it out") from exc
        if stat.S_ISLNK(child_info.st_mode):
            landing = posixpath.normpath(posixpath.join(posixpath.dirname(child_rel), link))
            if link.startswith("/") or landing == ".." or landing.startswith("../"):
                raise _refuse(
                    index,
                    f"{where}: {child_rel} is a symlink to {link[:200]!r}, outside the copied "
                    "folder; refused",
                    "make the link relative and inside the folder, or copy its target instead",
                )
            if "\n" in link or "\r" in link or len(link.encode("utf-8", "replace")) > MAX_PATH:
                raise _refuse(
                    index,
                    f"{where}: {child_rel} is a symlink whose target holds a line break or is "
                    "too long; refused",
                    "remove the link, or copy its target instead",
                )
            yield _Item(child_rel, "symlink", child, 0o777, int(child_info.st_mtime), link)
        else:
            yield from _items(child, child_rel, child_info, index, where, depth + 1)


@dataclass
class _Budget:
    entries: int = 0
    bytes: int = 0

    def take(self, index: int, entries: int = 0, size: int = 0) -> None:
        self.entries += entries
        self.bytes += size
        if self.entries > MAX_ENTRIES:
            raise _refuse(
                index,
                f"the spec's files hold more than {MAX_ENTRIES} entries; refused",
                "add large trees to the image itself, or archive them and unpack in 'setup'",
            )
        if self.bytes > MAX_BYTES:
            raise _refuse(
                index,
                f"the spec's files hold more than {MAX_BYTES:,} bytes; refused",
                "add large files to the image itself, or fetch them in 'setup'",
            )


def _hash_file(item: _Item, index: int, budget: _Budget, out: int | None = None) -> str:
    """sha256 of a host file read without following links (copied to ``out`` if given)."""
    digest = hashlib.sha256()
    fd = os.open(item.host, _READ_FLAGS)
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise _refuse(index, f"{item.host} changed while it was read; refused", "build again")
        while data := source.read(_CHUNK):
            budget.take(index, size=len(data))
            digest.update(data)
            if out is not None:
                _write_all(out, data)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _line(target: str, item: _Item, content: str) -> str:
    return f"{target}\0{item.kind}\0{item.mode:o}\0{content or item.link}\n"


def files_digest(copies: Sequence[FileCopy], spec_dir: Path) -> str:
    """``sha256:`` of what ``copies`` would add: each path, its kind, mode and contents.

    Raises:
        SpecError: a source is missing, leaves the spec's folder, holds a special file or
            a symlink out of the copied folder, or the whole is larger than the caps.
    """
    digest, budget = hashlib.sha256(), _Budget()
    for index, copy in enumerate(copies):
        _check_target(copy, index)
        for item in _walk(copy, index, spec_dir):
            budget.take(index, entries=1)
            content = _hash_file(item, index, budget) if item.kind == "file" else ""
            digest.update(_line(_target(copy, item), item, content).encode("utf-8", "replace"))
    return "sha256:" + digest.hexdigest()


def _check_target(copy: FileCopy, index: int) -> None:
    parts = [part for part in copy.target.split("/") if part]
    if (
        "\n" in copy.target
        or "\r" in copy.target
        or len(copy.target.encode("utf-8", "replace")) > MAX_PATH // 2
        or any(len(part.encode("utf-8", "replace")) > MAX_NAME for part in parts)
    ):
        raise SpecError(
            [
                SpecIssue(
                    f"files[{index}].target {copy.target[:80]!r} holds a line break or is too "
                    "long for the image; refused",
                    pointer=f"/spec/files/{index}/target",
                )
            ]
        )


def _target(copy: FileCopy, item: _Item) -> str:
    base = copy.target.strip("/")
    return f"{base}/{item.rel}".strip("/") if item.rel else base


def add_files(tree: Tree, copies: Sequence[FileCopy], spec_dir: Path) -> str:
    """Add ``copies`` to ``tree`` in order (later entries replace earlier paths); returns
    the same digest as :func:`files_digest`, of what was actually copied.

    Raises:
        SpecError: see :func:`files_digest`; or a target lies under a symlink or a file of
            the image, or would replace a folder of the image with a file.
    """
    digest, budget = hashlib.sha256(), _Budget()
    for index, copy in enumerate(copies):
        _check_target(copy, index)
        for item in _walk(copy, index, spec_dir):
            budget.take(index, entries=1)
            target = _target(copy, item)
            _parents(tree, target, copy, index)
            content = _place(tree, target, item, copy, index, budget)
            digest.update(_line(target, item, content).encode("utf-8", "replace"))
    return "sha256:" + digest.hexdigest()


def _parents(tree: Tree, target: str, copy: FileCopy, index: int) -> None:
    so_far = ""
    for part in target.split("/")[:-1]:
        so_far = f"{so_far}/{part}" if so_far else part
        entry = tree.entries.get(so_far)
        if entry is None:
            tree.host_path(so_far).mkdir(0o755)
            tree.add(so_far, Entry("dir", 0o755, 0, 0, 0))
        elif entry.kind == "symlink":
            real = posixpath.normpath(posixpath.join("/" + posixpath.dirname(so_far), entry.link))
            raise SpecError(
                [
                    SpecIssue(
                        f"files[{index}].target {copy.target!r} lies under /{so_far}, which "
                        f"the image has as a symlink to {entry.link[:200]!r}; refused",
                        pointer=f"/spec/files/{index}/target",
                    )
                ],
                f"name the real folder instead (e.g. {real}/…)",
            )
        elif entry.kind != "dir":
            raise SpecError(
                [
                    SpecIssue(
                        f"files[{index}].target {copy.target!r} lies under /{so_far}, which "
                        f"the image has as a {entry.kind}; refused",
                        pointer=f"/spec/files/{index}/target",
                    )
                ]
            )


def _place(
    tree: Tree, target: str, item: _Item, copy: FileCopy, index: int, budget: _Budget
) -> str:
    existing = tree.entries.get(target)
    entry = Entry(item.kind, item.mode, 0, 0, item.mtime, link=item.link)
    if item.kind == "dir":
        if not target or (existing is not None and existing.kind == "dir"):
            return ""  # merged into the image's folder, which keeps its own metadata
        tree.remove(target)
        tree.host_path(target).mkdir(0o755)
        tree.add(target, entry)
        return ""
    if (existing is not None and existing.kind == "dir") or not target:
        raise SpecError(
            [
                SpecIssue(
                    f"files[{index}] would replace the image's folder /{target} with a "
                    f"{item.kind}; refused",
                    pointer=f"/spec/files/{index}/target",
                )
            ],
            "name a path inside the folder (a target ending in the file's name)",
        )
    tree.remove(target)
    host = tree.host_path(target)
    if item.kind == "symlink":
        os.symlink(item.link, host)
        tree.add(target, entry)
        return ""
    out = os.open(host, _WRITE_FLAGS, 0o644)
    try:
        content = _hash_file(item, index, budget, out)
    finally:
        os.close(out)
    tree.add(target, entry)
    return content
