"""Bulk data into a running guest by disk: the spare drive whose medium is swapped.

QEMU's ``microvm`` has virtio-mmio devices only, which cannot be hot-plugged, so a task's
VM boots with a spare virtio disk backed by an empty file (:data:`SPARE`). A copy above
the data-disk threshold (:func:`pyro.machines.datadisk.wanted`) becomes an ext4 image
(:class:`pyro.machines.datadisk.ImageBuild`, the same builder and entries as a seed);
QMP points the spare's raw node at the image and resizes it, which the guest's virtio-blk
driver sees as a capacity change; the guest mounts it read-only, copies it into place
with ``cp``, unmounts it, and the host gives the spare its empty file back. The host never
reads the image back.

What arrives is what the agent path makes: files owned by root with the walk's modes,
folders created 0755 (existing ones keep theirs), symlinks as walked, existing files
replaced.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.errors import GuestError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.machines.datadisk import ImageBuild

#: The spare's empty placeholder in the VM's folder, and the name of a pushed image.
SPARE = "spare.img"
PUSH_IMAGE = "push.img"
_MOUNT = "/run/pyro/push"
_SERIAL = "pyro-push"
#: The guest lacks a program the copy needs (an image environment without util-linux).
NO_TOOLS = 127
# $1: the destination; then pairs of (mode, name) for files whose setuid/setgid/sticky
# bits cp does not keep. The capacity change arrives asynchronously: wait for it.
_COPY = f"""set -e
dest=$1; shift
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
mkdir -p {_MOUNT} "$dest"
mount -t ext4 -o ro,noatime "/dev/${{dev##*/}}" {_MOUNT}
trap 'umount {_MOUNT}' EXIT
umask 0
cp -RP --remove-destination -- {_MOUNT}/. "$dest/"
while [ $# -ge 2 ]; do chmod "$1" -- "$dest/$2"; shift 2; done
"""


def placeholder(folder: Path) -> Path:
    """The spare's empty file in the VM's ``folder``, made when missing."""
    path = folder / SPARE
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    return path


def push(
    client: AgentClient,
    build: ImageBuild,
    dest: str,
    swap: Callable[[Path | None], None],
) -> bool:
    """Copy ``build``'s image into the guest folder ``dest`` through the spare disk;
    ``swap`` gives the spare its medium (:meth:`pyro.vmm.qemu.QemuBackend.swap_spare`).
    False when the guest lacks a program the copy needs (nothing was copied: the caller
    uses the agent path).

    Raises:
        UsageError: the image could not be built.  VMMError: QEMU refused the swap.
        GuestError: the copy failed in the guest (the reason is in the message).
    """
    try:
        build.wait()
        swap(build.image)
        try:
            args: list[str] = []
            for entry in build.special:
                args += [format(entry.mode, "o"), entry.name]
            result = client.exec(
                ["/bin/sh", "-c", _COPY, "sh", dest, *args],
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
            build.image.unlink()
    if result.exit_code == NO_TOOLS:
        return False
    if result.exit_code != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GuestError(
            f"copying the pushed disk into {dest} failed in the guest "
            f"(exit {result.exit_code}): {detail[-1] if detail else 'no message'}",
            "check the guest path (a file where a folder goes, or the reverse) and free "
            "space in the guest",
        )
    return True
