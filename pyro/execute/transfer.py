"""Copying files between the host and a guest, never outside the allowed host root.

The host side trusts nothing the guest says about paths or sizes: every host path is
resolved (symlinks included) and must stay inside ``root`` (the spec's folder, or a
workspace root); what the guest sends back is written by :mod:`pyro.machines.copyout`, the one
guest-to-host tree writer (names checked, no write through a symlink, byte and entry caps).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.errors import GuestPathError
from pyro.machines.copyout import CopyBudget, CopyLimits, CopyRules, copy_file, copy_tree
from pyro.spec.gitmeta import has_git_part

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.machines.registry import VMRecord


@dataclass
class TransferStats:
    files: int = 0
    bytes: int = 0
    directories: int = 0
    skipped: list[str] = field(default_factory=list)
    """Guest paths not copied out: symlinks, FIFOs, sockets, devices."""

    def summary(self) -> str:
        """One line for a step's message, e.g. ``3 file(s), 120 bytes, 1 skipped``."""
        text = f"{self.files} file(s), {self.bytes} bytes"
        if self.skipped:
            text += (
                f", {len(self.skipped)} skipped (symlinks, special files and git metadata "
                "are not copied)"
            )
        return text


def host_path_inside(root: Path, relative: str, *, what: str) -> Path:
    """``root/relative`` with symlinks resolved, refused when it leaves ``root``.

    Raises:
        GuestPathError: the path escapes ``root``.
    """
    root_real = root.resolve()
    candidate = (root_real / relative).resolve()
    if candidate != root_real and root_real not in candidate.parents:
        raise GuestPathError(
            f"{what} {relative!r} resolves to {candidate}, outside {root_real}",
            "keep host paths inside the spec's folder (symlinks that leave it are refused)",
        )
    return candidate


def copy_in(client: AgentClient, root: Path, source: str, target: str) -> TransferStats:
    """Copy a host file or folder (relative to ``root``) to an absolute guest path.

    A ``target`` ending in ``/`` is a folder the source is copied into.

    Raises:
        GuestPathError: the source is missing, escapes ``root``, or is not a file/folder.
    """
    host, files = _source_files(root, source)
    if target.endswith("/"):
        target = posixpath.join(target, host.name)
    stats = TransferStats()
    for path, rel in files:
        _put(client, path, posixpath.join(target, rel) if rel else target, stats)
    return stats


def copy_in_by_disk(
    client: AgentClient, root: Path, source: str, target: str, record: VMRecord, folder: Path
) -> TransferStats | None:
    """:func:`copy_in` by the VM's spare disk (:mod:`pyro.machines.pushdisk`): the same
    files, modes and guest paths (missing parent folders 0755); None when the VM cannot
    (no spare, or its guest lacks ``tar``: nothing was copied).

    Raises:
        GuestPathError: as :func:`copy_in`.  UsageError: a file changed since the walk.
        VMMError, GuestError: the swap or the guest's extraction failed.
    """
    from pyro.machines import pushdisk
    from pyro.machines.datadisk import Entry
    from pyro.vmm import get_backend
    from pyro.vmm.base import VMHandle

    backend = get_backend(record.backend)
    swap = getattr(backend, "swap_spare", None)
    if swap is None or record.handle is None or not (folder / pushdisk.SPARE).is_file():
        return None
    handle = VMHandle.from_dict(record.handle)
    host, files = _source_files(root, source)
    if target.endswith("/"):
        target = posixpath.join(target, host.name)
    entries: list[Entry] = []
    folders: set[str] = set()
    for path, rel in files:
        name = posixpath.normpath(posixpath.join(target, rel) if rel else target).lstrip("/")
        parent = posixpath.dirname(name)
        while parent and parent not in folders:  # each missing one 0755, as the agent makes
            folders.add(parent)
            entries.append(Entry(parent, "d"))
            parent = posixpath.dirname(parent)
        real = path.resolve()  # a link inside root (checked by the walk) is copied as its file
        info = real.stat()
        entries.append(Entry(name, "f", real, stat_mod.S_IMODE(info.st_mode), info.st_size))
    entries.sort(key=lambda entry: (entry.kind != "d", entry.name.count("/"), entry.name))
    sent = pushdisk.push(client, entries, folder, "/", lambda image: swap(handle, image))
    if sent is None:
        return None
    return TransferStats(files=len(files), bytes=sent)


def source_digest(root: Path, source: str) -> str | None:
    """``sha256:`` of what :func:`copy_in` would copy: each file's relative path, mode and
    bytes (a plan pins it, apply checks it); None when the copy would fail (the source is
    missing, escapes ``root``, is not a file or folder, or cannot be read).

    File digests are remembered by path and stat signature for this process, so planning
    and applying in one process (``pyro apply spec.yaml``) reads each file once.
    """
    try:
        _, files = _source_files(root, source)
        entries = []
        for path, rel in files:
            info = path.stat()
            entries.append([rel, stat_mod.S_IMODE(info.st_mode), _file_digest(path, info)])
    except (GuestPathError, OSError):
        return None
    canonical = json.dumps(entries, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def source_size(root: Path, source: str) -> tuple[int, int]:
    """(files, bytes) :func:`copy_in` copies; (0, 0) when the copy would fail."""
    try:
        _, files = _source_files(root, source)
        return len(files), sum(path.stat().st_size for path, _ in files)
    except (GuestPathError, OSError):
        return 0, 0


_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}
_DIGESTS_MAX = 65536


def _file_digest(path: Path, info: os.stat_result) -> str:
    # The ctime too: user space cannot set it back after a write (see docs/cache.md).
    key = (str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)
    found = _DIGESTS.get(key)
    if found is None:
        with path.open("rb") as handle:
            found = hashlib.file_digest(handle, "sha256").hexdigest()
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.clear()
        _DIGESTS[key] = found
    return found


def _source_files(root: Path, source: str) -> tuple[Path, list[tuple[Path, str]]]:
    """The resolved source and the regular files a copy-in of it copies, in order, each with
    its path relative to the source ("" for a source that is a file).

    Raises:
        GuestPathError: the source is missing, escapes ``root``, is not a file or folder, or
            holds a symlink leaving ``root``.
    """
    host = host_path_inside(root, source, what="source")
    if not host.exists():
        raise GuestPathError(
            f"copy-in source {source!r} does not exist (looked at {host})",
            "create it, or fix 'files[].source' (relative to the spec's folder)",
        )
    if host.is_file():
        return host, [(host, "")]
    if not host.is_dir():
        raise GuestPathError(f"copy-in source {source!r} is not a regular file or folder")
    root_real = root.resolve()
    files: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(host):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames):
            path = base / name
            rel = path.relative_to(host).as_posix()
            if path.is_symlink():
                real = path.resolve()
                if root_real not in real.parents:
                    raise GuestPathError(
                        f"copy-in of {source!r}: {rel} is a symlink leaving {root_real}",
                        "remove the symlink or point it inside the spec's folder",
                    )
            if not stat_mod.S_ISREG(path.stat().st_mode):
                continue  # sockets, fifos, devices: nothing sensible to copy
            files.append((path, rel))
    return host, files


def _put(client: AgentClient, path: Path, target: str, stats: TransferStats) -> None:
    mode = stat_mod.S_IMODE(path.stat().st_mode)
    with path.open("rb") as f:
        stats.bytes += client.put_file(target, f, mode=mode)
    stats.files += 1


def artifact_target(source: str, target: str) -> str:
    """The host path (relative to the spec's folder) an artifact is written to: ``target``,
    or ``target/<source's name>`` when ``target`` ends in ``/``."""
    name = posixpath.basename(source.rstrip("/")) or "root"
    return posixpath.normpath(posixpath.join(target, name) if target.endswith("/") else target)


def copy_out(
    client: AgentClient,
    root: Path,
    source: str,
    target: str,
    *,
    budget: CopyBudget | None = None,
) -> TransferStats:
    """Copy a guest file or folder to a host path relative to ``root``.

    A ``target`` ending in ``/`` is a folder the source is copied into. The target path
    (the spec's) is resolved with symlinks and must stay inside ``root`` and out of any
    ``.git`` folder; what the guest puts below it is written by :mod:`pyro.machines.copyout` (names
    checked first, nothing written through a symlink, guest symlinks, special files and git
    metadata skipped and counted in ``skipped``, guest modes not kept). ``budget`` is what
    may still be written: one per run, shared by all its artifacts (default: a fresh one of
    ``$PYRO_COPY_OUT_MAX_BYTES``/``_ENTRIES``/``_DEPTH``).

    Raises:
        GuestPathError: the host target escapes ``root`` or is in a ``.git`` folder; the
            guest path is missing, is not a regular file or folder (a symlink is not
            followed), holds a bad name, or is laid out as a git folder; the host cannot
            write a file.
        LimitError: the copy would pass a byte, entry or depth cap.
    """
    rel_target = artifact_target(source, target)
    if has_git_part(rel_target):
        raise GuestPathError(
            f"artifact target {target!r} (for {source}) is in a .git folder; artifacts are "
            "never written there (a guest-written hook or config would run commands at the "
            "next git command)",
            "choose a target outside .git (copy git metadata out as an archive if needed)",
        )
    info = client.stat(source)
    rules = CopyRules(
        what=f"artifact {source}",
        host_error=GuestPathError,
        hint="copy out an archive instead (e.g. tar the files in a step), or free disk space",
        budget=budget or CopyBudget(CopyLimits.from_env()),
        inside=root,
    )
    if info.kind == "d":
        dest = host_path_inside(root, rel_target, what="artifact target")
        report = copy_tree(client, source, dest, rules)
    elif info.kind == "f":
        parent, leaf = posixpath.split(rel_target)
        if leaf in ("", ".", ".."):
            raise GuestPathError(
                f"artifact target {target!r} names a folder, not a file",
                "end the target with '/' to copy the file into that folder",
            )
        folder = host_path_inside(root, parent or ".", what="artifact target")
        report = copy_file(client, source, info, folder, leaf, rules)
    else:
        raise GuestPathError(
            f"artifact {source} is a {info.type} in the guest, not a regular file or folder",
            "point 'artifacts[].source' at a regular file or a folder "
            "(symlinks are not followed, devices and FIFOs are not read)",
        )
    return TransferStats(
        files=report.files,
        bytes=report.bytes,
        directories=report.directories,
        skipped=report.skipped,
    )
