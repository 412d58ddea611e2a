"""Pruning the environment cache: what may go, and what must stay.

Removed: installs that fail the quick check, installs no ``current.json`` points at, junk
in the environments tree, the cache's work dirs whose owner process is dead, and other
writers' (builders') work dirs once they are a day old. Kept: anything whose name's lock is
held by a running pull or build, and installs a VM recorded in ``$PYRO_STATE_DIR`` boots from.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pyro import paths
from pyro.environments.cache.files import (
    CURRENT_FILE,
    DIGEST_DIR_RE,
    UNOWNED_TMP_MAX_AGE,
    Invalid,
    PrunedItem,
    dirs_in_use,
    read_current,
    remove_stale_tmp,
    removed,
)
from pyro.environments.cache.store import Cache
from pyro.errors import CacheError


def prune(cache: Cache) -> list[PrunedItem]:
    """Remove invalid installs, installs no name points at, junk and stale tmp dirs.

    Names whose lock is held by another process are skipped, and so are installs a VM in
    ``$PYRO_STATE_DIR`` still boots from.

    Raises:
        CacheError: the cache cannot be read.
    """
    pruned = remove_stale_tmp(cache.tmp_root, unowned_older_than=UNOWNED_TMP_MAX_AGE)
    in_use = dirs_in_use(paths.state_dir())
    try:
        entries = sorted(os.scandir(cache.environments_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return pruned
    except OSError as exc:
        raise CacheError(f"cannot read {cache.environments_dir}: {exc}") from exc
    for entry in entries:
        sdir = Path(entry.path)
        if not entry.is_dir(follow_symlinks=False):
            pruned.append(removed(sdir, "not an install directory"))
            continue
        try:
            name, _ = read_current(sdir / CURRENT_FILE)
        except Invalid as exc:
            pruned.append(removed(sdir, str(exc)))
            continue
        with contextlib.suppress(CacheError), cache.lock(name, timeout=0):
            pruned.extend(_prune_slug(cache, name, sdir, in_use))
    return pruned


def _prune_slug(cache: Cache, name: str, sdir: Path, in_use: set[Path]) -> list[PrunedItem]:
    try:
        keep = cache.current(name, full=False).dir.name
    except Invalid as exc:
        if any(path.is_relative_to(sdir) for path in in_use):
            return []  # broken, but a VM still boots from it: remove it once that is gone
        return [removed(sdir, f"invalid install: {exc}")]
    pruned = []
    for entry in sorted(os.scandir(sdir), key=lambda e: e.name):
        if entry.name in (keep, CURRENT_FILE) or Path(entry.path) in in_use:
            continue
        reason = "old install" if DIGEST_DIR_RE.match(entry.name) else "not part of an install"
        pruned.append(removed(Path(entry.path), reason))
    return pruned
