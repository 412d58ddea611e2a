"""Bulk data into a running guest by disk: the spare drive whose medium is swapped.

QEMU's ``microvm`` has virtio-mmio devices only, which cannot be hot-plugged, so a task's
or a run's VM boots with a spare virtio disk backed by an empty file (:data:`SPARE`). A
copy above :func:`rule`'s threshold is written as a tar
archive of the walk's entries (:func:`write_archive`: no staging copy, no ``mke2fs``, and
the guest reads it in one sequential pass without mounting anything); QMP points the
spare's raw node at the archive and resizes it, which the guest's virtio-blk driver sees
as a capacity change; the guest extracts the raw device into place with GNU tar, and the
host gives the spare its empty file back. The host never reads the archive back.

What arrives is what the agent path makes: files owned by root with the walk's modes,
folders created 0755 (existing ones keep theirs), symlinks as walked, existing files
replaced, modification times of the copy.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pyro.errors import GuestError, UsageError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.machines.datadisk import Entry

#: The spare's empty placeholder in the VM's folder, and the name of a pushed archive.
SPARE = "spare.img"
PUSH_IMAGE = "push.tar"
_SERIAL = "pyro-push"
#: A push goes by disk when ``bytes + files * FILE_WEIGHT`` reaches this many bytes
#: (``$PYRO_DATA_DISK_MIN_BYTES`` moves it, as for a seed): the guest extracts at about
#: the agent's rate per byte, but a file costs the agent a round trip (docs/performance.md).
DEFAULT_THRESHOLD = 32 * 1024 * 1024
FILE_WEIGHT = 128 * 1024
#: The guest lacks a program the copy needs (an image environment without GNU tar).
NO_TOOLS = 127
# $1: the destination. The capacity change arrives asynchronously: wait for it. As root,
# tar keeps the archive's modes (setuid/setgid included) and, told so, gives the files to
# root, leaves folders already there as they are and stamps the time of the copy.
_COPY = f"""set -e
dest=$1
dev=
for b in /sys/block/vd*; do
  serial=
  read -r serial < "$b/serial" || true
  [ "$serial" = {_SERIAL} ] && dev=$b
done
[ -n "$dev" ] || {{ echo 'pyro: the spare disk is not in the guest' >&2; exit 90; }}
i=0
while read -r size < "$dev/size" && [ "$size" = 0 ]; do
  i=$((i+1))
  [ $i -le 400 ] || {{ echo 'pyro: the pushed disk did not appear in the guest' >&2; exit 91; }}
  sleep 0.05
done
mkdir -p "$dest"
tar -x -f "/dev/${{dev##*/}}" -C "$dest" -p -m --no-same-owner --no-overwrite-dir
"""


def wanted(backend: str, files: int, total_bytes: int) -> bool:
    """Whether a copy of ``files`` files and ``total_bytes`` bytes into a running guest
    goes by its spare disk on ``backend`` (QEMU only).

    Raises:
        UsageError: a bad ``$PYRO_DATA_DISK_MIN_BYTES``.
    """
    if not backend.startswith("qemu"):
        return False
    limit, weight = rule()
    return total_bytes + files * weight >= limit


def rule() -> tuple[int, int]:
    """(threshold, weight of a file): a copy goes by disk when ``bytes + files * weight``
    reaches the threshold. ``$PYRO_DATA_DISK_MIN_BYTES``, when set, gives the threshold
    with the seed's weight.

    Raises:
        UsageError: a bad ``$PYRO_DATA_DISK_MIN_BYTES``.
    """
    from pyro.machines import datadisk

    if os.environ.get("PYRO_DATA_DISK_MIN_BYTES", "").strip():
        return datadisk.threshold(), datadisk.FILE_WEIGHT
    return DEFAULT_THRESHOLD, FILE_WEIGHT


def placeholder(folder: Path) -> Path:
    """The spare's empty file in the VM's ``folder``, made when missing."""
    path = folder / SPARE
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    return path


def write_archive(entries: Sequence[Entry], path: Path) -> int:
    """Write ``entries`` (the walk's, in its order: a folder before what it holds) as a
    tar archive at ``path`` (0600); returns the bytes of file content in it.

    Raises:
        UsageError: a file cannot be read, is no longer a regular file, or changed size
            since the walk (the walk's size cap must hold for what is sent).
    """
    import tarfile  # only when a push goes by disk

    now = int(time.time())
    sent = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with (
        os.fdopen(fd, "wb") as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.uname = info.gname = "root"
            info.mtime = now
            info.mode = entry.mode
            if entry.kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "l":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                tar.addfile(info)
            else:
                assert entry.host is not None
                with _opened(entry) as source:
                    info.size = entry.size
                    tar.addfile(info, source)
                sent += entry.size
    return sent


@contextlib.contextmanager
def _opened(entry: Entry) -> Iterator[BinaryIO]:
    """``entry``'s host file, checked to be the regular file of the size the walk saw."""
    assert entry.host is not None
    try:
        fd = os.open(entry.host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(
            f"cannot copy {entry.host}: {exc.strerror or exc}",
            "check the file is readable and is not being changed during the copy",
        ) from exc
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
            raise UsageError(
                f"{entry.host} changed while it was being copied",
                "push again once nothing writes to the folder",
            )
        try:
            yield source
        except OSError as exc:  # tarfile's "unexpected end of data": it shrank meanwhile
            if os.fstat(fd).st_size == entry.size:
                raise
            raise UsageError(
                f"{entry.host} changed while it was being copied",
                "push again once nothing writes to the folder",
            ) from exc


def push(
    client: AgentClient,
    entries: Sequence[Entry],
    folder: Path,
    dest: str,
    swap: Callable[[Path | None], None],
) -> int | None:
    """Copy ``entries`` into the guest folder ``dest`` through the spare disk, the
    archive written in the VM's ``folder``; ``swap`` gives the spare its medium
    (:meth:`pyro.vmm.qemu.QemuBackend.swap_spare`). Returns the bytes of file content
    sent, or None when the guest lacks ``tar`` (nothing was copied: the caller uses the
    agent path).

    Raises:
        UsageError: a host file could not be read.  VMMError: QEMU refused the swap.
        GuestError: the copy failed in the guest (the reason is in the message).
    """
    archive = folder / PUSH_IMAGE
    try:
        sent = write_archive(entries, archive)
        swap(archive)
        try:
            result = client.exec(
                ["/bin/sh", "-c", _COPY, "sh", dest],
                timeout_s=600.0,
                stdout_cap=4096,
                stderr_cap=4096,
                uid=0,  # whatever user an image environment runs commands as
                gid=0,
            )
        finally:
            swap(None)
    finally:
        with contextlib.suppress(OSError):
            archive.unlink()
    if result.exit_code == NO_TOOLS:
        return None
    if result.exit_code != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GuestError(
            f"copying the pushed disk into {dest} failed in the guest "
            f"(exit {result.exit_code}): {detail[-1] if detail else 'no message'}",
            "check the guest path (a file where a folder goes, or the reverse) and free "
            "space in the guest",
        )
    return sent
