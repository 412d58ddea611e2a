"""Copying files between the host and a guest, never outside the allowed host root.

The host side trusts nothing the guest says about paths or sizes: every host path is
resolved (symlinks included) and must stay inside ``root`` (the spec's folder, or a
workspace root); guest-supplied names are checked before they become host paths.
"""

from __future__ import annotations

import os
import posixpath
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.errors import GuestPathError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

#: Copy-out of a whole guest directory stops past this many files (a hostile guest could
#: otherwise make the host write without end).
MAX_COPY_OUT_FILES = 100_000
#: Copy-out of one file stops past this many bytes (``/dev/zero`` never ends).
MAX_COPY_OUT_BYTES = 16 << 30


@dataclass
class TransferStats:
    files: int = 0
    bytes: int = 0


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
    host = host_path_inside(root, source, what="source")
    if not host.exists():
        raise GuestPathError(
            f"copy-in source {source!r} does not exist (looked at {host})",
            "create it, or fix 'files[].source' (relative to the spec's folder)",
        )
    if target.endswith("/"):
        target = posixpath.join(target, host.name)
    stats = TransferStats()
    if host.is_file():
        _put(client, host, target, stats)
        return stats
    if not host.is_dir():
        raise GuestPathError(f"copy-in source {source!r} is not a regular file or folder")
    root_real = root.resolve()
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
            mode = path.stat().st_mode
            if not stat_mod.S_ISREG(mode):
                continue  # sockets, fifos, devices: nothing sensible to copy
            _put(client, path, posixpath.join(target, rel), stats)
    return stats


def _put(client: AgentClient, path: Path, target: str, stats: TransferStats) -> None:
    mode = stat_mod.S_IMODE(path.stat().st_mode)
    with path.open("rb") as f:
        stats.bytes += client.put_file(target, f, mode=mode)
    stats.files += 1


def copy_out(client: AgentClient, root: Path, source: str, target: str) -> TransferStats:
    """Copy a guest file or folder to a host path relative to ``root``.

    A ``target`` ending in ``/`` is a folder the source is copied into.

    Raises:
        GuestPathError: the host target escapes ``root``, or the guest path is missing.
    """
    info = client.stat(source)
    name = posixpath.basename(source.rstrip("/")) or "root"
    rel_target = posixpath.join(target, name) if target.endswith("/") else target
    stats = TransferStats()
    if info.type == "dir":
        _copy_out_dir(client, root, source, rel_target, stats)
    else:
        _get(client, root, source, rel_target, stats)
    return stats


def _copy_out_dir(
    client: AgentClient, root: Path, source: str, rel_target: str, stats: TransferStats
) -> None:
    pending = [(source, rel_target)]
    while pending:
        guest_dir, host_dir = pending.pop()
        host = host_path_inside(root, host_dir, what="artifact target")
        try:
            host.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GuestPathError(
                f"cannot create artifact folder {host_dir!r} on the host: {exc.strerror or exc}"
            ) from exc
        for entry in client.list_dir(guest_dir):
            name = entry.name
            if not name or name in (".", "..") or "/" in name or "\x00" in name:
                raise GuestPathError(f"the guest listed a bad file name {name!r} in {guest_dir}")
            if stats.files >= MAX_COPY_OUT_FILES:
                raise GuestPathError(
                    f"copy-out of {source!r} exceeds {MAX_COPY_OUT_FILES} files",
                    "copy out an archive instead (e.g. tar the folder in a step)",
                )
            guest_child = posixpath.join(guest_dir, name)
            host_child = posixpath.join(host_dir, name)
            if entry.type == "dir":
                pending.append((guest_child, host_child))
            elif entry.type == "file":
                _get(client, root, guest_child, host_child, stats)


def _get(
    client: AgentClient, root: Path, guest: str, rel_target: str, stats: TransferStats
) -> None:
    try:
        dest = host_path_inside(root, rel_target, what="artifact target")
        dest.parent.mkdir(parents=True, exist_ok=True)
        is_link = dest.is_symlink()
    except OSError as exc:  # e.g. a guest name longer than the host allows
        raise GuestPathError(
            f"cannot write artifact {rel_target!r} on the host: {exc.strerror or exc}"
        ) from exc
    if is_link:
        raise GuestPathError(
            f"artifact target {rel_target!r} is a symlink; refusing to write through it"
        )
    # A short temp name: the guest's name may already be at the host's 255-byte limit.
    tmp = dest.with_name(f".pyro-partial-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            stats.bytes += client.get_file(guest, f, max_bytes=MAX_COPY_OUT_BYTES)
        os.replace(tmp, dest)
    except OSError as exc:  # host side: a name too long for the host, a full disk
        raise GuestPathError(
            f"cannot write artifact {rel_target!r} on the host: {exc.strerror or exc}",
            "copy out an archive instead (e.g. tar the files in a step), or free disk space",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    stats.files += 1
