"""A container image made an environment, for bench/run.py (group ``images``).

The image is about 100 MB of this host's own files (``/usr/lib``, ``/usr/share``, in sorted
order, regular files only) in three gzip layers, pushed once to a Debian ``docker-registry``
on 127.0.0.1. Figures:

* ``image_convert_cold_s``   ``EnvironmentService.pull(oci://…)`` into an empty cache (only
                             the installed debian:12's kernel copied in): the manifest,
                             the layers downloaded, applied and written as ext4, installed
* ``image_convert_cached_s`` the same pull again: the installed environment is found

``python bench/images.py`` prints both once (for measuring by hand).
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_BYTES = 100 << 20
LAYERS = 3
SOURCES = ("/usr/lib", "/usr/share")
MAX_FILE = 512 << 10
"""Larger files are skipped, so the image has thousands of files like a real one."""


def host_files(budget: int) -> list[Path]:
    """Regular files under :data:`SOURCES`, sorted, until ``budget`` bytes."""
    found: list[Path] = []
    total = 0
    for top in SOURCES:
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                if not path.is_file() or path.is_symlink():
                    continue
                size = path.stat().st_size
                if size > MAX_FILE:
                    continue
                if total + size > budget:
                    return found
                found.append(path)
                total += size
    return found


def layer_tars(files: list[Path]) -> list[bytes]:
    """The files split into :data:`LAYERS` tars of about equal bytes, each member as the
    host has it."""
    share = -(-sum(path.stat().st_size for path in files) // LAYERS)
    groups: list[list[Path]] = [[]]
    size = 0
    for path in files:
        if size >= share:
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += path.stat().st_size
    tars = []
    for group in groups:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in group:
                try:
                    archive.add(path, arcname=str(path).lstrip("/"), recursive=False)
                except OSError:
                    continue  # unreadable on this host: left out
        tars.append(out.getvalue())
    return tars


@contextmanager
def pushed_image() -> Iterator[tuple[str, int]]:
    """(oci:// reference, image bytes) of the bench image in a registry of its own."""
    from helpers.oci_images import layer, push_image
    from helpers.registry import running_registry

    files = host_files(IMAGE_BYTES)
    layers = [layer(data) for data in layer_tars(files)]
    with (
        tempfile.TemporaryDirectory(prefix="pyro-bench-image-") as work,
        running_registry(Path(work) / "registry") as registry,
    ):
        ref = registry.ref("bench/image", "1")
        push_image(ref, layers, {"Env": ["PATH=/usr/bin:/bin"]}, Path(work) / "push")
        yield ref, sum(path.stat().st_size for path in files)


def convert_times(runs: int) -> tuple[list[float], list[float]]:
    """(cold, cached) seconds of ``runs`` conversions of the bench image."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.oci_images import kernel_cache

    from pyro.environments.cache.store import Cache
    from pyro.environments.service import EnvironmentService

    kernel_env = Cache().lookup("debian:12")
    if kernel_env is None:
        raise SystemExit("bench: debian:12 is not installed ('make environments')")
    cold: list[float] = []
    cached: list[float] = []
    with pushed_image() as (ref, _):
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="pyro-bench-cache-") as root:
                service = EnvironmentService(kernel_cache(Path(root), kernel_env))
                begun = time.perf_counter()
                service.pull(ref)
                cold.append(time.perf_counter() - begun)
                begun = time.perf_counter()
                service.pull(ref)
                cached.append(time.perf_counter() - begun)
    return cold, cached


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    cold_s, cached_s = convert_times(1)
    print(f"image_convert_cold_s {cold_s[0]:.2f}  image_convert_cached_s {cached_s[0]:.4f}")
