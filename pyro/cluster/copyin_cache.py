"""A node's cache of copy-in tars (``$PYRO_CACHE_DIR/cluster-copy-in``): bounded, least
recently used out first, never a tar a run on this node is unpacking.

A run holds its tar with a shared ``flock`` while it unpacks; pruning takes an exclusive
one without waiting and passes over what it cannot get. A download holds its partial file
the same way, so what a killed worker left half-written is swept and a live download is
not. Without a bound, every distinct copy-in a caller sent stayed on the node's disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from pyro.cluster.copyin import PARTIAL_PREFIX, fetch
from pyro.errors import PyroError

CACHE_ENV = "PYRO_CLUSTER_COPY_IN_CACHE_MB"
#: Room for two copy-ins at the largest a node takes by default (``PYRO_CLUSTER_COPY_IN_MAX_MB``).
DEFAULT_CACHE_MIB = 8192


def cache_max_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """``$PYRO_CLUSTER_COPY_IN_CACHE_MB`` in bytes (default 8 GiB); a bad value: the default."""
    raw = environ.get(CACHE_ENV, "").strip()
    return (int(raw) if raw.isdigit() and len(raw) < 9 else DEFAULT_CACHE_MIB) * 1024 * 1024


@contextlib.contextmanager
def held(descriptor: Mapping[str, Any], cache: Path) -> Iterator[Path]:
    """The copy-in tar ``descriptor`` names, fetched into ``cache`` when it is not there,
    and held while the caller reads it; then the cache is pruned to its bound.

    Raises:
        PyroError, RegistryError: as :func:`pyro.cluster.copyin.fetch`, the tar alone is
            larger than the cache's bound, or it was pruned by other runs each time it was
            fetched.
    """
    size, digest, most = descriptor.get("size"), descriptor.get("digest"), cache_max_bytes()
    if isinstance(size, int) and size > most:
        raise PyroError(
            f"the run's copy-in artifact is {size} bytes, more than this node's copy-in "
            f"cache holds ({most})",
            f"raise {CACHE_ENV} on the node above {size // (1024 * 1024) + 1}, "
            "or copy less into the run",
        )
    if isinstance(size, int) and isinstance(digest, str):  # room first: the bound holds
        name = f"{digest[7:]}.tar"  # while it downloads too
        prune(cache, most if (cache / name).is_file() else most - size, keep=name)
    handle = _open_held(descriptor, cache)
    try:
        yield Path(handle.name)
    finally:
        handle.close()
        prune(cache, cache_max_bytes())


def _open_held(descriptor: Mapping[str, Any], cache: Path) -> IO[bytes]:
    for _ in range(3):
        path = fetch(descriptor, cache)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            continue  # pruned between the fetch and here: fetch again
        fcntl.flock(handle, fcntl.LOCK_SH)
        if os.fstat(handle.fileno()).st_nlink == 0:
            handle.close()  # pruned before the lock was ours
            continue
        os.utime(handle.fileno())  # used now: the last to go
        return handle
    raise PyroError(
        "the run's copy-in tar was pruned from this node's cache each time it was fetched",
        f"raise {CACHE_ENV} on the node: other runs' copy-ins fill it",
    )


def prune(cache: Path, max_bytes: int, *, keep: str = "") -> list[Path]:
    """Remove the least recently used tars no run holds until ``cache`` holds at most
    ``max_bytes`` (held ones may keep it above), and partial downloads nobody writes.
    The tar named ``keep`` stays (a run is about to use it). Returns what was removed."""
    removed = [p for p in _entries(cache, PARTIAL_PREFIX + "*") if _remove_if_free(p)]
    tars = []
    for path in _entries(cache, "*.tar"):
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            tars.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in tars)
    for _, size, path in sorted(tars):
        if total <= max_bytes:
            break
        if path.name != keep and _remove_if_free(path):
            removed.append(path)
            total -= size
    return removed


def _entries(cache: Path, pattern: str) -> list[Path]:
    try:
        return [p for p in cache.glob(pattern) if p.is_file() and not p.is_symlink()]
    except OSError:
        return []


def _remove_if_free(path: Path) -> bool:
    """Unlink ``path`` unless someone holds a lock on it (then it is in use)."""
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            path.unlink()
            return True
    except FileNotFoundError:
        return False
