"""Per-VM writable disks over a cached base rootfs that is never written.

* QEMU gets a **qcow2 overlay** whose backing file is the base image (``qemu-img create
  -F raw -b BASE``): creating it costs a few milliseconds and a few hundred KiB.
* Firecracker only takes raw images, so it gets a **reflink or sparse copy**
  (``cp --reflink=auto --sparse=always``): instant on btrfs/xfs, a sparse copy elsewhere
  (cost grows with the data in the image, not its size).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pyro.errors import VMMError

QEMU_IMG = "qemu-img"


def run_qemu_img(*args: str, qemu_img: str = QEMU_IMG) -> None:
    """Run ``qemu-img ARGS…`` whose last argument is the image it writes.

    Raises:
        VMMError: qemu-img is missing, fails (its last error line is shown) or hangs.
    """
    exe = shutil.which(qemu_img)
    if exe is None:
        raise VMMError(
            "qemu-img is not installed",
            hint="install it with 'apt-get install qemu-utils'",
        )
    dest = args[-1]
    try:
        subprocess.run([exe, *args], check=True, capture_output=True, timeout=30)
    except subprocess.CalledProcessError as exc:
        lines = exc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise VMMError(
            f"qemu-img could not write {dest}: {lines[-1] if lines else exc}",
            hint="check free disk space and permissions of the VM's state directory",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise VMMError(f"qemu-img timed out writing {dest}") from exc


def create_qcow2_overlay(base: Path, dest: Path, *, qemu_img: str = QEMU_IMG) -> Path:
    """Create ``dest`` as a qcow2 image backed by the raw image ``base``.

    Raises:
        VMMError: when ``base`` is missing or qemu-img fails.
    """
    _require_base(base)
    run_qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        str(base.absolute()),
        str(dest),
        qemu_img=qemu_img,
    )
    return dest


def create_sparse_copy(base: Path, dest: Path) -> Path:
    """Copy ``base`` to ``dest`` as a reflink where the filesystem allows, else sparse.

    Raises:
        VMMError: when ``base`` is missing or the copy fails.
    """
    _require_base(base)
    argv = ["cp", "--reflink=auto", "--sparse=always", "--", str(base), str(dest)]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        dest.unlink(missing_ok=True)
        stderr = getattr(exc, "stderr", b"") or b""
        raise VMMError(
            f"could not copy the root filesystem to {dest}: "
            f"{stderr.decode('utf-8', 'replace').strip() or exc}",
            hint="check free disk space in the VM's state directory",
        ) from exc
    return dest


def _require_base(base: Path) -> None:
    if not base.is_file():
        raise VMMError(
            f"base root filesystem {base} does not exist",
            hint="the environment's install is incomplete; run 'pyro env pull ENV' again",
        )
