"""Apply container image layers to a tree, as the OCI image spec's changeset rules say.

Layers are tar streams applied in order: a ``.wh.NAME`` member deletes ``NAME`` from the
layers below, a ``.wh..wh..opq`` member empties its directory of what the layers below put
there, any other member adds or replaces its path. Everything is done without privileges:

* the metadata of every path (type, mode with setuid/setgid/sticky, owner, mtime, xattrs,
  link target, device numbers) is kept in :class:`Tree`, never applied on the host;
* regular file contents, directories, symlinks and hard links go into a staging folder
  owned by the caller, with modes the caller can read; device nodes and fifos are never
  created there (the ext4 writer adds them to the image).

Tar member names are not trusted: a name with a ``..`` component, a hard link to a path
that is not a regular file of the tree, a member under a path that is a symlink, and a
sparse member (whose map could expand it past the bytes the layer holds) are refused
(the layer is corrupt or hostile); absolute names are taken relative to the root, as
container runtimes do. The staging folder only ever holds real directories on the way
to any path, so writing there never follows a link.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pyro.errors import RegistryError

Kind = Literal["file", "dir", "symlink", "char", "block", "fifo"]
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_ENTRIES = 1_000_000
MAX_PATH = 4095
MAX_NAME = 255
MAX_XATTR_BYTES = 3072
"""Bytes of extended attributes kept per file: what fits next to an ext4 inode and in its
one attribute block with room to spare; a file with more keeps none and is counted."""
XATTR_PREFIXES = ("user.", "security.", "trusted.")
_XATTR_PAX = "SCHILY.xattr."
_CHUNK = 1 << 20


@dataclass
class Entry:
    """One path of the tree: what the ext4 image must hold there."""

    kind: Kind
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    mtime: int
    link: str = ""  # symlink target
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    layer: int = 0
    inode: str = ""  # the path whose inode a hard link shares ("" = its own)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def layer_error(summary: str, hint: str | None = None) -> RegistryError:
    """A layer that is corrupt or hostile; the message names the layer and the member."""
    return RegistryError(summary, hint)


@dataclass
class Tree:
    """The merged image tree: metadata by path ("" is the root) plus a staging folder."""

    staging: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    dropped_xattrs: int = 0
    unpacked: int = 0
    """Tar bytes of every layer applied so far (they share one budget)."""

    def __post_init__(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        self.entries[""] = Entry("dir", 0o755, 0, 0, 0)
        self.children[""] = set()

    # -- reading -------------------------------------------------------------------------

    def host_path(self, path: str) -> Path:
        return self.staging / path if path else self.staging

    def read_file(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """Contents of a regular file of the tree (no link followed), None if there is none."""
        entry = self.entries.get(path)
        if entry is None or entry.kind != "file":
            return None
        fd = os.open(self.host_path(path), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit)

    def walk(self) -> Iterator[tuple[str, Entry]]:
        """Every path, parents before children."""
        yield from sorted(self.entries.items())

    # -- changing ------------------------------------------------------------------------

    def remove(self, path: str) -> None:
        """Remove ``path`` and everything under it (tree and staging)."""
        entry = self.entries.get(path)
        if entry is None:
            return
        stack = [path]
        while stack:
            current = stack.pop()
            stack.extend(self.children.pop(current, ()))
            self.entries.pop(current, None)
        self.children[_parent(path)].discard(path)
        host = self.host_path(path)
        if entry.kind == "dir":
            shutil.rmtree(host)
        elif entry.kind in ("file", "symlink"):
            host.unlink()
        # Hard links to a removed file keep their own staged link (same bytes, own name);
        # the first one left owns the inode's metadata from now on.
        orphans: dict[str, list[str]] = {}
        for other_path, other in self.entries.items():
            if other.inode == path or other.inode.startswith(path + "/"):
                orphans.setdefault(other.inode, []).append(other_path)
        for group in orphans.values():
            owner, *rest = sorted(group)
            self.entries[owner].inode = ""
            for other_path in rest:
                self.entries[other_path].inode = owner

    def add(self, path: str, entry: Entry) -> None:
        """Record ``entry`` at ``path`` (its parent is a directory of the tree)."""
        self.entries[path] = entry
        self.children[_parent(path)].add(path)
        if entry.kind == "dir":
            self.children.setdefault(path, set())
        if len(self.entries) > MAX_ENTRIES:
            raise layer_error(
                f"the image has more than {MAX_ENTRIES} files",
                "pyro refuses images this large; build a smaller one",
            )


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def clean_name(name: str, what: str) -> str:
    """A tar member name as a relative path without ``.`` parts ("" for the root).

    Raises:
        RegistryError: it has a ``..`` component, a NUL or newline, or is too long.
    """
    if "\x00" in name or "\n" in name or "\r" in name:
        raise layer_error(f"{what}: the name {name[:80]!r} holds a NUL or line break; refused")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise layer_error(
            f"{what}: {name[:200]!r} climbs out of the root with '..'; refused",
            "the layer is corrupt or hostile; do not use this image",
        )
    path = "/".join(parts)
    if len(path) > MAX_PATH or any(len(part.encode()) > MAX_NAME for part in parts):
        raise layer_error(f"{what}: the name {name[:80]!r}… is too long for ext4; refused")
    return path


class _Counting:
    """A reader that hashes what passes and refuses to pass more than ``budget`` bytes,
    ``spent`` of them already."""

    def __init__(self, inner: Readable, budget: int, what: str, spent: int = 0) -> None:
        self.inner, self.budget, self.what, self.spent = inner, budget, what, spent
        self.count = 0
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(_CHUNK if size < 0 else min(size, _CHUNK))
        self.count += len(data)
        if self.spent + self.count > self.budget:
            raise layer_error(
                f"{self.what} unpacks to more than the pull limit of {self.budget >> 20} MiB "
                "(the image's layers together); stopped",
                "if the image really is that large, raise PYRO_PULL_MAX_MB",
            )
        self.sha256.update(data)
        return data


def apply_layer(tree: Tree, blob: Readable, index: int, what: str, budget: int) -> str:
    """Apply one uncompressed tar layer read from ``blob``; its ``sha256:`` digest (diff id).

    ``budget`` bounds the tar bytes of all the layers applied to ``tree`` together. Raises
    RegistryError on a hostile or broken member.
    """
    reader = _Counting(blob, budget, what, tree.unpacked)
    opaque: list[str] = []
    try:
        with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as archive:  # type: ignore[call-overload]
            for member in archive:
                _apply_member(tree, archive, member, index, what, opaque)
            # Read the end-of-archive padding so the digest covers the whole blob.
            while reader.read(_CHUNK):
                pass
    except (tarfile.TarError, ValueError, UnicodeError, OverflowError) as exc:
        raise layer_error(f"{what} is not a valid tar archive: {exc}") from exc
    finally:
        tree.unpacked += reader.count
    for directory in opaque:
        if tree.entries.get(directory, Entry("file", 0, 0, 0, 0)).kind == "dir":
            _hide_lower(tree, directory, index)
    return "sha256:" + reader.sha256.hexdigest()


def _apply_member(
    tree: Tree,
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    index: int,
    what: str,
    opaque: list[str],
) -> None:
    label = f"{what}, member {member.name[:200]!r}"
    path = clean_name(member.name, label)
    parent, _, base = path.rpartition("/")
    if base.startswith(WHITEOUT):
        if base == WHITEOUT:
            raise layer_error(f"{label}: a whiteout that names no file; refused")
        _parents(tree, parent, label, index)
        if base == OPAQUE:
            opaque.append(parent)
        elif not base.startswith(WHITEOUT + WHITEOUT):  # other .wh..wh. names: aufs bookkeeping
            tree.remove(clean_name(f"{parent}/{base[len(WHITEOUT) :]}", label))
        return
    if not path:
        if member.isdir():
            root = tree.entries[""]
            root.mode, root.uid, root.gid = member.mode & 0o7777, member.uid, member.gid
        return
    _parents(tree, parent, label, index)
    existing = tree.entries.get(path)
    entry = Entry(
        kind="file",
        mode=member.mode & 0o7777,
        uid=member.uid,
        gid=member.gid,
        mtime=int(member.mtime),
        layer=index,
        xattrs=_xattrs(tree, member),
    )
    host = tree.host_path(path)
    if member.isdir():
        entry.kind = "dir"
        if existing is not None and existing.kind == "dir":
            existing.mode, existing.uid, existing.gid = entry.mode, entry.uid, entry.gid
            existing.mtime, existing.xattrs, existing.layer = entry.mtime, entry.xattrs, index
            return
        tree.remove(path)
        host.mkdir(0o755)
    elif member.islnk():
        target = clean_name(member.linkname, label)
        linked = tree.entries.get(target)
        if linked is None or linked.kind != "file" or target == path:
            raise layer_error(
                f"{label}: a hard link to {member.linkname[:200]!r}, which is not a regular "
                "file of the image; refused",
                "the layer is corrupt or hostile; do not use this image",
            )
        tree.remove(path)
        os.link(tree.host_path(target), host, follow_symlinks=False)
        owner = linked.inode or target
        entry = Entry(**{**linked.__dict__, "layer": index, "inode": owner})
    elif member.issym():
        if len(member.linkname.encode()) > MAX_PATH or "\x00" in member.linkname:
            raise layer_error(f"{label}: its symlink target is too long or holds a NUL; refused")
        entry.kind, entry.link = "symlink", member.linkname
        tree.remove(path)
        os.symlink(member.linkname, host)
    elif member.issparse():  # its map could expand a few bytes to terabytes of zeros
        raise layer_error(
            f"{label}: a sparse file (its declared size is not the bytes the layer holds); refused",
            "rebuild the image without sparse files (image builders do not write them)",
        )
    elif member.isfile():
        tree.remove(path)
        _write(archive, member, host, label)
    elif member.ischr() or member.isblk() or member.isfifo():
        entry.kind = "char" if member.ischr() else "block" if member.isblk() else "fifo"
        entry.rdev = (member.devmajor, member.devminor)
        tree.remove(path)  # recorded only: the ext4 writer makes the node in the image
    else:
        raise layer_error(f"{label}: tar member type {member.type!r} is not supported; refused")
    tree.add(path, entry)


def _hide_lower(tree: Tree, directory: str, index: int) -> None:
    """An opaque directory: remove what layers below ``index`` put under it."""
    for child in sorted(tree.children.get(directory, ())):
        entry = tree.entries[child]
        if entry.kind == "dir" and (entry.layer == index or _holds_layer(tree, child, index)):
            _hide_lower(tree, child, index)
        elif entry.layer != index:
            tree.remove(child)


def _holds_layer(tree: Tree, directory: str, index: int) -> bool:
    return any(
        tree.entries[child].layer == index
        or (tree.entries[child].kind == "dir" and _holds_layer(tree, child, index))
        for child in tree.children.get(directory, ())
    )


def _parents(tree: Tree, parent: str, label: str, index: int) -> None:
    """Make sure every directory on the way to ``parent`` exists as a real directory."""
    if not parent:
        return
    so_far = ""
    for part in parent.split("/"):
        so_far = f"{so_far}/{part}" if so_far else part
        entry = tree.entries.get(so_far)
        if entry is None:
            tree.host_path(so_far).mkdir(0o755)
            tree.add(so_far, Entry("dir", 0o755, 0, 0, 0, layer=index))
        elif entry.kind == "symlink":
            raise layer_error(
                f"{label}: lies under {so_far!r}, a symlink (to {entry.link[:200]!r}); refused",
                "the layer is corrupt or hostile; do not use this image",
            )
        elif entry.kind != "dir":
            raise layer_error(f"{label}: lies under {so_far!r}, which is not a directory; refused")


def _write(archive: tarfile.TarFile, member: tarfile.TarInfo, host: Path, label: str) -> None:
    source = archive.extractfile(member)
    if source is None:
        raise layer_error(f"{label}: its contents cannot be read")
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while data := source.read(_CHUNK):
            out.write(data)


def _xattrs(tree: Tree, member: tarfile.TarInfo) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if not key.startswith(_XATTR_PAX):
            continue
        name = key[len(_XATTR_PAX) :]
        if name.startswith(XATTR_PREFIXES) and name.isprintable() and len(name) <= MAX_NAME:
            found[name] = value.encode("utf-8", "surrogateescape")
    if sum(len(k) + len(v) for k, v in found.items()) > MAX_XATTR_BYTES:
        tree.dropped_xattrs += 1
        return {}
    return found


def regular_bytes(tree: Tree) -> int:
    """Bytes of regular file contents in the staging folder (hard links counted once)."""
    return sum(
        os.lstat(tree.host_path(path)).st_size
        for path, entry in tree.entries.items()
        if entry.kind == "file" and not entry.inode
    )
