"""Bulk data into a guest by disk instead of through the agent's stream.

The host lays out a staging copy of entries it has already walked and checked (the
caller's walk decides what goes in and refuses what must be refused, exactly as for the
agent path; this module only writes what it is given), turns it into an ext4 image with
``mke2fs -d`` (no root needed) while the guest boots, and attaches the image as a second
virtio disk (:attr:`pyro.vmm.base.VMConfig.data_disk`). The guest mounts it read-only as
the lower layer of an overlay on the destination folder: nothing is copied, and what the
guest changes lands in the upper layer on its own root disk (so disk snapshots keep
working). The host never reads the image back.

The image says what the agent path does: owner root (when pyro does not run as root the
guest changes the owners once, on the first mount), file modes as on the host, folders
0755, symlinks with the targets the walk computed, modification times of the copy.

Which path a copy takes is :func:`wanted`; the figures behind the default are in
docs/performance.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.errors import GuestError, UsageError
from pyro.host import shmroom
from pyro.process.identity import process_alive

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

#: The image's name in the VM's folder; it lives as long as the VM.
IMAGE = "workspace.img"
_STAGING = "workspace.staging"
#: The staging copy goes to memory when there is room: creating thousands of files on a
#: busy disk costs seconds, in a tmpfs milliseconds (docs/performance.md). Named after
#: its owner (PID, start ticks) so that a copy left by a killed owner is reaped.
_SHM = Path("/dev/shm")
_SHM_PREFIX = "pyro-stage-"
#: A copy goes by disk when ``bytes + files * FILE_WEIGHT`` reaches this many bytes.
DEFAULT_THRESHOLD = 3 * 1024 * 1024
#: What one file costs through the agent, in bytes of the agent's stream.
FILE_WEIGHT = 64 * 1024
_DIR_MODE = 0o755
_NO_DISK = 90
#: Where the guest keeps the layers (upper and work on its root disk, so they persist).
_LOWER = "/run/pyro/seed"
_LAYERS = "/var/lib/pyro/overlay"
_SERIAL = "pyro-data"
# Only when pyro does not run as root: give the image's files to root, once. The mounts
# themselves are agent requests (no program to start: each costs a noticeable time under TCG).
_CHOWN = f"""set -e
dev=
for b in /sys/block/vd*; do
  serial=
  read -r serial < "$b/serial" || true
  [ "$serial" = {_SERIAL} ] && dev=/dev/${{b##*/}}
done
[ -n "$dev" ] || {{ echo 'pyro: the data disk is not in the guest' >&2; exit {_NO_DISK}; }}
mkdir -p {_LOWER}
mount -t ext4 -o rw,noatime "$dev" {_LOWER}
chown -R -h 0:0 {_LOWER}
while [ $# -ge 2 ]; do chmod "$1" -- "{_LOWER}/$2"; shift 2; done
umount {_LOWER}
"""


@dataclass(frozen=True)
class Entry:
    """One entry of the tree: a folder, a host file, or a symlink."""

    name: str
    """Path relative to the destination, ``/``-separated (the walk's)."""
    kind: str  # "d", "f" or "l"
    host: Path | None = None
    mode: int = _DIR_MODE
    size: int = 0
    """A file's size when the walk saw it (it sizes the image)."""
    target: str = ""


def threshold() -> int:
    """``$PYRO_DATA_DISK_MIN_BYTES`` (0: always by disk), or :data:`DEFAULT_THRESHOLD`.

    Raises:
        UsageError: the variable is set to something other than a whole number.
    """
    raw = os.environ.get("PYRO_DATA_DISK_MIN_BYTES", "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    if not raw.isdigit():
        raise UsageError(
            f"PYRO_DATA_DISK_MIN_BYTES is {raw!r}, not a whole number of bytes",
            "set it to a number of bytes (0: always by disk), or unset it",
        )
    return int(raw)


def wanted(backend: str, files: int, total_bytes: int) -> bool:
    """Whether a copy of ``files`` files and ``total_bytes`` bytes goes by disk on
    ``backend``: QEMU only (Firecracker cannot run guests here to test it), and only when
    ``mke2fs`` is on the host.

    Raises:
        UsageError: a bad ``$PYRO_DATA_DISK_MIN_BYTES``.
    """
    if not backend.startswith("qemu"):
        return False
    if total_bytes + files * FILE_WEIGHT < threshold():
        return False
    return _tool("mke2fs") is not None and _tool("debugfs") is not None


def _tool(name: str) -> str | None:
    """An e2fsprogs program: on PATH, or in /usr/sbin or /sbin (not on a user's PATH)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )


class ImageBuild:
    """An image being built in a thread (it overlaps the guest's boot).

    The image file gets its final size at once, so the VMM can open it at start; the
    guest reads it only after :meth:`wait` returned.
    """

    def __init__(self, entries: Sequence[Entry], folder: Path) -> None:
        self.image = folder / IMAGE
        self._folder = folder
        self._staging = folder / _STAGING
        self._room: shmroom.Reservation | None = None
        self._entries = entries
        self._error: BaseException | None = None
        self.bytes = sum(e.size for e in entries)
        self.setid = [e for e in entries if e.kind == "f" and e.mode & 0o6000]
        self.keep_lost_found = any(e.name == "lost+found" for e in entries)
        #: The staged files are not root's (pyro does not run as root); known once built.
        self.user_owned = False
        blocks = sum(math.ceil(e.size / 4096) + 1 for e in entries)
        inodes = len(entries) + 64
        # Sparse: generous room costs nothing but metadata.
        self._kib = (blocks * 4 * 5 // 4) + inodes * 4 + 16 * 1024
        self._inodes = inodes
        try:
            fd = os.open(self.image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, self._kib * 1024)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _no_room(folder, exc) from exc
        self._thread = threading.Thread(target=self._run, name="pyro-data-disk", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Raises: UsageError: a host file could not be read, or mke2fs failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Wait for the build to end and remove the image (the copy failed elsewhere)."""
        self._thread.join()
        self.image.unlink(missing_ok=True)

    def _run(self) -> None:
        try:
            self._stage()
            self._mkfs()
        except OSError as exc:  # the staging folder itself (a file's own error is named)
            self._error = _no_room(self.image.parent, exc)
        except BaseException as exc:  # handed to wait()
            self._error = exc
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            if self._room is not None:
                self._room.release()

    def _stage(self) -> None:
        shutil.rmtree(self._folder / _STAGING, ignore_errors=True)
        self._room = shmroom.reserve(2 * self.bytes + (256 << 20))
        self._staging = self._room.folder if self._room else _staging_folder(self._folder)
        root = self._staging
        for entry in self._entries:
            path = root / entry.name
            try:
                if entry.kind == "d":
                    os.mkdir(path)
                    os.chmod(path, _DIR_MODE)
                elif entry.kind == "l":
                    os.symlink(entry.target, path)
                else:
                    assert entry.host is not None
                    _copy(entry.host, path)
                    os.chmod(path, entry.mode)
            except OSError as exc:
                raise UsageError(
                    f"cannot copy {entry.host or entry.name}: {exc.strerror or exc}",
                    "check the file is readable and is not being changed during the copy",
                ) from exc
        os.chmod(root, _DIR_MODE)
        info = os.lstat(root)
        self.user_owned = (info.st_uid, info.st_gid) != (0, 0)

    def _mkfs(self) -> None:
        mke2fs = _tool("mke2fs")
        assert mke2fs is not None
        argv = [
            mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0",
            "-N", str(self._inodes), "-O", "^has_journal",
            "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            "-d", str(self._staging), str(self.image), f"{self._kib}k",
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0 and not self.keep_lost_found:
            # Still the host's own image: mke2fs's lost+found is not the user's.
            rmdir = [_tool("debugfs") or "debugfs", "-w", "-R", "rmdir lost+found"]
            proc = subprocess.run(
                [*rmdir, str(self.image)], capture_output=True, text=True, check=False
            )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise UsageError(
                f"mke2fs could not build the data disk: {detail[-1] if detail else 'no message'}",
                "check free space under the pyro state folder, or set "
                "PYRO_DATA_DISK_MIN_BYTES to a large number to copy through the agent",
            )


def _staging_folder(folder: Path) -> Path:
    """A new private folder for the staging copy in the VM's ``folder``, used when
    ``/dev/shm`` has no room reserved for it (:mod:`pyro.host.shmroom`: concurrent builds
    never fill it together)."""
    os.mkdir(folder / _STAGING, 0o700)
    return folder / _STAGING


def reap_staging() -> list[str]:
    """Remove the staging copies in /dev/shm whose owner is gone (killed mid-build);
    returns their names."""
    reaped = []
    with contextlib.suppress(OSError):
        for path in _SHM.glob(f"{_SHM_PREFIX}*"):
            parts = path.name[len(_SHM_PREFIX) :].split("-")
            try:
                pid, ticks = int(parts[0]), float(parts[1])
            except (IndexError, ValueError):
                continue
            if not process_alive(pid, ticks):
                shutil.rmtree(path, ignore_errors=True)
                reaped.append(path.name)
    return reaped


def _no_room(folder: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"cannot build the data disk in {folder}: {exc.strerror or exc}",
        "free disk space under the pyro state folder, or set PYRO_DATA_DISK_MIN_BYTES to a "
        "large number to copy the seed through the agent",
    )


def _copy(source: Path, dest: Path) -> None:
    """A regular file's bytes (``shutil.copyfile`` refuses a FIFO or socket swapped in)."""
    shutil.copyfile(source, dest)


def mount(client: AgentClient, build: ImageBuild, dest: str) -> None:
    """Mount the attached image, first boot, as the lower layer of an overlay on ``dest``.

    When pyro does not run as root the image holds the user's owners: the guest gives
    the files to root first and sets again the setuid/setgid bits that change clears.

    Raises:
        GuestError: the guest could not mount it (the reason is in the message).
    """
    if build.user_owned:
        args: list[str] = []
        for entry in build.setid:
            args += [format(entry.mode, "o"), entry.name]
        result = client.exec(
            ["/bin/sh", "-c", _CHOWN, "sh", *args],
            timeout_s=300.0,
            stdout_cap=4096,
            stderr_cap=4096,
            uid=0,  # whatever user an image environment runs commands as
            gid=0,
        )
        if result.exit_code != 0:
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GuestError(
                f"giving the data disk's files to root failed in the guest "
                f"(exit {result.exit_code}): {detail[-1] if detail else 'no message'}",
                "check 'pyro task logs' and the guest's free space",
            )
    remount(client, dest)


def remount(client: AgentClient, dest: str) -> None:
    """Mount the attached image (read-only) and the overlay on ``dest`` over it.

    Raises:
        GuestError: the guest could not mount it (the reason is in the message).
    """
    from pyro.guest.results import GuestRequestError

    layers = f"lowerdir={_LOWER},upperdir={_LAYERS}/upper,workdir={_LAYERS}/work"
    try:
        client.mount(f"serial:{_SERIAL}", _LOWER, "ext4", read_only=True)
        client.mount(
            "overlay",
            dest,
            "overlay",
            data=f"{layers},redirect_dir=on",
            dirs=(f"{_LAYERS}/upper", f"{_LAYERS}/work"),
        )
    except GuestRequestError as exc:
        raise GuestError(
            f"mounting the data disk on {dest} failed in the guest: {exc.summary}",
            "the guest kernel needs ext4 and overlayfs; check 'pyro task logs'",
        ) from exc
