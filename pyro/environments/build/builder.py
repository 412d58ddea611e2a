"""Build a whole environment: the guest kernel and the root filesystem of a catalog entry.

The kernel recipe lives in :mod:`pyro.environments.build.kernel`, the rootfs recipe in
:mod:`pyro.environments.build.rootfs`. This module puts both files in one output folder and
returns the metadata the cache turns into an install manifest.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pyro.environments.build.kernel import build_kernel, build_kernel_info
from pyro.environments.build.rootfs import RootfsInfo, build_rootfs
from pyro.environments.build.run import BUILDER_VERSION, Log, say
from pyro.environments.catalog import CatalogEntry
from pyro.errors import BuildError

__all__ = [
    "BUILDER_VERSION",
    "BuiltEnvironment",
    "build_environment",
    "build_kernel",
    "build_rootfs",
]

KERNEL_FILE = "vmlinux"
ROOTFS_FILE = "rootfs.ext4"


@dataclass(frozen=True)
class BuiltEnvironment:
    """The files :func:`build_environment` wrote and what went into them."""

    name: str
    version: str
    spec_digest: str
    kernel: Path
    kernel_digest: str
    kernel_release: str
    rootfs: Path
    rootfs_info: RootfsInfo
    build_seconds: float

    @property
    def packages(self) -> dict[str, str]:
        """Debian packages in the rootfs: name → version."""
        return self.rootfs_info.packages

    def to_dict(self) -> dict[str, object]:
        """JSON-ready metadata (camelCase keys), for the install manifest."""
        return {
            "name": self.name,
            "version": self.version,
            "specDigest": self.spec_digest,
            "builder": BUILDER_VERSION,
            "kernel": {
                "digest": self.kernel_digest,
                "release": self.kernel_release,
                "bytes": self.kernel.stat().st_size,
            },
            "rootfs": self.rootfs_info.to_dict() | {"image": ROOTFS_FILE},
            "buildSeconds": self.build_seconds,
        }


def build_environment(
    entry: CatalogEntry, out_dir: Path, *, cache_root: Path, log: Log | None = None
) -> BuiltEnvironment:
    """Write ``out_dir/vmlinux`` and ``out_dir/rootfs.ext4`` for ``entry``.

    The kernel comes from (or goes into) the content-addressed kernel cache under
    ``cache_root`` and is hard-linked (copied across file systems) into ``out_dir``.

    Raises:
        BuildError: the kernel or rootfs build fails, or ``out_dir`` cannot be written.
    """
    started = time.monotonic()
    body = entry.spec.spec
    if body.kernel is None or body.rootfs is None:
        raise BuildError(
            f"{entry.name} is made from a container image, not built from kernel and rootfs",
            "build it with 'pyro env build' (EnvironmentService.build)",
        )
    say(log, f"building {entry.name} {body.version} ({entry.spec_digest[:19]})")
    kernel = build_kernel_info(body.kernel, entry.spec_dir, cache_root=cache_root, log=log)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _link_or_copy(kernel.vmlinux, out_dir / KERNEL_FILE)
    except OSError as exc:
        raise BuildError(
            f"cannot write {out_dir / KERNEL_FILE}: {exc.strerror or exc}",
            hint="check free space and permissions of the output folder",
        ) from exc
    rootfs = build_rootfs(body.rootfs, out_dir / ROOTFS_FILE, cache_root=cache_root, log=log)
    return BuiltEnvironment(
        name=entry.name,
        version=body.version,
        spec_digest=entry.spec_digest,
        kernel=out_dir / KERNEL_FILE,
        kernel_digest=kernel.digest,
        kernel_release=kernel.release,
        rootfs=rootfs.image,
        rootfs_info=rootfs,
        build_seconds=round(time.monotonic() - started, 1),
    )


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        # Different file system (or no hard links): a copy is as good, just bigger.
        shutil.copyfile(source, target)
