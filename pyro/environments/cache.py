"""The local environment cache: content-addressed, verified, atomically written installs.

Layout under the cache root (docs/cache.md)::

    environments/<slug>/<manifest-hex>/{manifest.json, vmlinux, rootfs.ext4, verified.json}
    environments/<slug>/current.json      {"name": ..., "digest": "sha256:..."}
    tmp/<pid>-<token>/                    work dirs, renamed into place
    locks/<slug>.lock                     one file lock per environment name

An install is used only when current.json, its manifest and every artifact are regular
files (never symlinks) and the artifacts' sha256 match the manifest. Hashing a 1 GiB rootfs
on every lookup would be slow, so a successful full verification records each file's
(size, mtime, inode) in verified.json; a lookup whose stat signature still matches trusts
that verification, anything else is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from pyro import paths
from pyro.environments import cache_files as store
from pyro.environments.cache_files import (
    ARTIFACT_FILES,
    MANIFEST_FILE,
    Invalid,
    canonical_json,
)
from pyro.errors import CacheError, EnvironmentInvalidError
from pyro.plan.inventory import InstalledEnvironment

CURRENT_FILE = "current.json"
# Work dirs of other writers (builders) carry no owner pid; prune removes them only when
# nothing can plausibly still be using them.
UNOWNED_TMP_MAX_AGE = 24 * 3600.0
_DIGEST_DIR_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Install:
    """One valid install: where its boot artifacts are and what its manifest says."""

    name: str
    digest: str
    version: str
    dir: Path
    kernel: Path
    rootfs: Path
    manifest: dict[str, Any]

    @property
    def source(self) -> str | None:
        """The ``oci://…@sha256:…`` reference it was pulled from; None when built here."""
        source = self.manifest.get("source")
        return source if isinstance(source, str) else None

    @property
    def source_digest(self) -> str | None:
        """The registry manifest digest it was pulled from; None when built here."""
        source = self.source
        return source.rpartition("@")[2] if source and "@sha256:" in source else None


@dataclass(frozen=True)
class InstallStatus:
    """What the cache holds for one name."""

    state: Literal["installed", "invalid", "not-installed"]
    reason: str = ""
    install: Install | None = None


@dataclass(frozen=True)
class PrunedItem:
    """Something prune removed, and why."""

    path: Path
    reason: str
    size: int


def slug(name: str) -> str:
    """A directory name for an environment name or oci:// reference.

    Readable part plus a short hash of the exact name, so ``debian:12`` and ``debian_12``
    never share a directory.
    """
    readable = re.sub(r"[^a-z0-9._-]+", "_", name.lower()).strip("_.")[:80] or "env"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


class Cache:
    """The environment cache under ``root`` (default ``$PYRO_CACHE_DIR``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir()
        self._locks: dict[str, FileLock] = {}

    @property
    def environments_dir(self) -> Path:
        return self.root / "environments"

    @property
    def tmp_root(self) -> Path:
        return self.root / "tmp"

    def slug_dir(self, name: str) -> Path:
        return self.environments_dir / slug(name)

    # -- locking and scratch space ------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = -1) -> Iterator[None]:
        """Hold the per-name file lock (re-entrant within this Cache).

        Raises:
            CacheError: the lock directory cannot be created, or ``timeout`` expired.
        """
        key = slug(name)
        lock = self._locks.get(key)
        if lock is None:
            lock_dir = self.root / "locks"
            try:
                lock_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheError(f"cannot create lock directory {lock_dir}: {exc}") from exc
            lock = self._locks[key] = FileLock(str(lock_dir / f"{key}.lock"))
        try:
            lock.acquire(timeout=timeout)
        except TimeoutError as exc:
            raise CacheError(
                f"environment {name!r} is busy (another pyro process holds its lock)",
                "wait for the other pull or build to finish, then retry",
            ) from exc
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh work directory under ``tmp/``, removed on exit unless renamed away.

        Its name carries this process's pid so that prune can tell live work from debris.

        Raises:
            CacheError: the directory cannot be created.
        """
        self._remove_stale_tmp()
        try:
            self.tmp_root.mkdir(parents=True, exist_ok=True)
            work = store.make_work_dir(self.tmp_root)
        except OSError as exc:
            raise CacheError(f"cannot create a work dir under {self.tmp_root}: {exc}") from exc
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------

    def status(self, name: str) -> InstallStatus:
        """Installed, invalid (with the reason) or not installed; cheap (see module doc).

        Raises:
            CacheError: the cache cannot be read (permissions, I/O errors).
        """
        sdir = self.slug_dir(name)
        if not os.path.lexists(sdir):
            return InstallStatus("not-installed")
        try:
            return InstallStatus("installed", install=self._current(name, full=False))
        except Invalid as exc:
            return InstallStatus("invalid", reason=str(exc))
        except OSError as exc:
            raise CacheError(f"cannot read the install of {name!r} in {sdir}: {exc}") from exc

    def lookup(self, name: str) -> Install | None:
        """The valid install ``name`` means, or None when there is none or it is invalid."""
        return self.status(name).install

    def verify(self, name: str) -> Install:
        """Hash every artifact of ``name``'s install and compare with its manifest.

        Raises:
            EnvironmentInvalidError: not installed, or any check fails.
            CacheError: the cache cannot be read.
        """
        if not os.path.lexists(self.slug_dir(name)):
            raise EnvironmentInvalidError(
                f"environment {name!r} is not installed", f"run 'pyro env pull {name}'"
            )
        try:
            return self._current(name, full=True)
        except Invalid as exc:
            raise EnvironmentInvalidError(
                f"environment {name!r} is invalid: {exc}",
                f"run 'pyro env pull {name}' to repair it, or 'pyro env prune' to remove it",
            ) from exc
        except OSError as exc:
            raise CacheError(f"cannot read the install of {name!r}: {exc}") from exc

    def installed(self) -> list[InstalledEnvironment]:
        """Every name with a valid install, sorted by name (invalid ones are left out)."""
        found: dict[str, InstalledEnvironment] = {}
        for name in self.names():
            install = self.lookup(name)
            if install is not None:
                found[name] = _inventory_entry(install)
        return [found[key] for key in sorted(found)]

    def names(self) -> list[str]:
        """Names recorded in every readable current.json (valid or not)."""
        names: list[str] = []
        try:
            entries = sorted(os.scandir(self.environments_dir), key=lambda e: e.name)
        except OSError:
            return names
        for entry in entries:
            with contextlib.suppress(Invalid):
                names.append(store.read_current(Path(entry.path) / CURRENT_FILE)[0])
        return names

    def _current(self, name: str, *, full: bool) -> Install:
        sdir = self.slug_dir(name)
        store.require_dir(self.environments_dir, "environments directory")
        store.require_dir(sdir, "install directory")
        recorded, digest = store.read_current(sdir / CURRENT_FILE)
        if recorded != name:
            raise Invalid(f"current.json names {recorded!r}, not {name!r}")
        manifest = store.check_install(sdir / digest.removeprefix("sha256:"), digest, full=full)
        return _install(name, digest, sdir / digest.removeprefix("sha256:"), manifest)

    # -- writing -------------------------------------------------------------------------

    def install(
        self,
        name: str,
        staged_dir: Path,
        metadata: Any,
        *,
        digests: Mapping[str, str] | None = None,
    ) -> Install:
        """Install the artifacts in ``staged_dir`` (vmlinux, rootfs.ext4) as ``name``.

        Files are moved (or copied across filesystems) into a work dir, hashed, described
        by a manifest, fsynced and renamed into place; then current.json is replaced
        atomically. ``metadata`` is a mapping or dataclass with at least ``version``, and
        optionally ``name``, ``spec_digest``, ``source`` and anything else worth keeping.
        ``digests`` (file name → sha256) skips re-reading files whose bytes the caller
        hashed while writing them; anything else is hashed here.

        Raises:
            CacheError: a staged file is missing or not a regular file, or writing fails.
        """
        try:
            meta = store.metadata_dict(metadata)
        except TypeError as exc:
            raise CacheError(str(exc), "pass a mapping or the builder's BuiltEnvironment") from exc
        with self.lock(name), self.scratch() as work:
            try:
                artifacts = store.stage_artifacts(Path(staged_dir), work, digests)
                manifest = {
                    "schemaVersion": 1,
                    "name": str(meta.pop("name", name)),
                    "version": str(meta.pop("version", "0.0.0")),
                    "specDigest": meta.pop("spec_digest", meta.pop("specDigest", None)),
                    "source": meta.pop("source", None),
                    "defaults": meta.pop("defaults", None),
                    "artifacts": artifacts,
                    "createdFrom": meta,
                }
                return self._commit(name, work, manifest)
            except OSError as exc:
                raise CacheError(f"cannot install environment {name!r}: {exc}") from exc

    def install_from(self, name: str, other: Install) -> Install:
        """Install the same content as ``other`` under another name, hard-linking files.

        Raises:
            CacheError: linking and copying both fail.
        """
        with self.lock(name), self.scratch() as work:
            try:
                for file in (*ARTIFACT_FILES.values(), store.VERIFIED_FILE):
                    store.link_or_copy(other.dir / file, work / file)
                return self._commit(name, work, dict(other.manifest), hashed=False)
            except OSError as exc:
                raise CacheError(f"cannot install environment {name!r}: {exc}") from exc

    def _commit(
        self, name: str, work: Path, manifest: dict[str, Any], *, hashed: bool = True
    ) -> Install:
        data = canonical_json(manifest)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        store.write_file(work / MANIFEST_FILE, data)
        if hashed:
            store.record_verified(work, digest)
        else:
            # Linked files share inodes with a verified install, so its stamp still
            # matches them; anything else is hashed here, before the install exists.
            try:
                store.check_install(work, digest, full=False)
            except Invalid as exc:
                raise CacheError(f"cannot install environment {name!r}: {exc}") from exc
        store.fsync_dir(work)
        sdir = self.slug_dir(name)
        self._clean_slug_dir(sdir)
        sdir.mkdir(parents=True, exist_ok=True)
        target = sdir / digest.removeprefix("sha256:")
        if os.path.lexists(target):
            try:
                store.check_install(target, digest, full=True)
            except Invalid:
                store.remove(target)
        if not os.path.lexists(target):
            os.rename(work, target)
            store.fsync_dir(sdir)
        store.write_file(sdir / CURRENT_FILE, canonical_json({"name": name, "digest": digest}))
        store.fsync_dir(sdir)
        return _install(name, digest, target, manifest)

    def _clean_slug_dir(self, sdir: Path) -> None:
        """Remove anything in a slug dir that is not a structurally sound install."""
        if os.path.islink(sdir) or (os.path.lexists(sdir) and not sdir.is_dir()):
            store.remove(sdir)
            return
        if not sdir.exists():
            return
        for entry in os.scandir(sdir):
            if entry.name == CURRENT_FILE and entry.is_file(follow_symlinks=False):
                continue
            if _DIGEST_DIR_RE.match(entry.name) and entry.is_dir(follow_symlinks=False):
                try:
                    store.check_install(Path(entry.path), "sha256:" + entry.name, full=False)
                    continue
                except Invalid:
                    pass
            store.remove(Path(entry.path))

    # -- pruning -------------------------------------------------------------------------

    def prune(self) -> list[PrunedItem]:
        """Remove invalid installs, installs no name points at, junk and stale tmp dirs.

        Names whose lock is held by another process are skipped, and so are installs a
        VM in ``$PYRO_STATE_DIR`` still boots from.

        Raises:
            CacheError: the cache cannot be read.
        """
        pruned = self._remove_stale_tmp(unowned_older_than=UNOWNED_TMP_MAX_AGE)
        in_use = store.dirs_in_use(paths.state_dir())
        try:
            entries = sorted(os.scandir(self.environments_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return pruned
        except OSError as exc:
            raise CacheError(f"cannot read {self.environments_dir}: {exc}") from exc
        for entry in entries:
            sdir = Path(entry.path)
            if not entry.is_dir(follow_symlinks=False):
                pruned.append(_removed(sdir, "not an install directory"))
                continue
            try:
                name, _ = store.read_current(sdir / CURRENT_FILE)
            except Invalid as exc:
                pruned.append(_removed(sdir, str(exc)))
                continue
            with contextlib.suppress(CacheError), self.lock(name, timeout=0):
                pruned.extend(self._prune_slug(name, sdir, in_use))
        return pruned

    def _prune_slug(self, name: str, sdir: Path, in_use: set[Path]) -> list[PrunedItem]:
        try:
            keep = self._current(name, full=False).dir.name
        except Invalid as exc:
            if any(path.is_relative_to(sdir) for path in in_use):
                return []  # broken, but a VM still boots from it: remove it once that is gone
            return [_removed(sdir, f"invalid install: {exc}")]
        pruned = []
        for entry in sorted(os.scandir(sdir), key=lambda e: e.name):
            if entry.name in (keep, CURRENT_FILE) or Path(entry.path) in in_use:
                continue
            reason = "old install" if _DIGEST_DIR_RE.match(entry.name) else "not part of an install"
            pruned.append(_removed(Path(entry.path), reason))
        return pruned

    def _remove_stale_tmp(self, *, unowned_older_than: float | None = None) -> list[PrunedItem]:
        """Remove our work dirs whose owner process is dead.

        ``tmp/`` is shared with the kernel, rootfs and agent builders, whose work dirs
        (``kernel-…``, ``agent-…``) carry no pid: those are left alone, except by prune
        when they are older than ``unowned_older_than`` seconds.
        """
        pruned = []
        now = time.time()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.tmp_root):
                pid, sep, _ = entry.name.partition("-")
                if pid.isdigit() and sep:
                    if not store.pid_alive(int(pid)):
                        pruned.append(_removed(Path(entry.path), "left over by a dead process"))
                    continue
                if unowned_older_than is None:
                    continue
                with contextlib.suppress(OSError):
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                    if age > unowned_older_than:
                        pruned.append(_removed(Path(entry.path), "stale work dir"))
        return pruned


def _install(name: str, digest: str, where: Path, manifest: dict[str, Any]) -> Install:
    return Install(
        name=name,
        digest=digest,
        version=str(manifest.get("version", "")),
        dir=where,
        kernel=where / ARTIFACT_FILES["kernel"],
        rootfs=where / ARTIFACT_FILES["rootfs"],
        manifest=manifest,
    )


def _inventory_entry(install: Install) -> InstalledEnvironment:
    spec_digest = install.manifest.get("specDigest")
    defaults = install.manifest.get("defaults")
    defaults = defaults if isinstance(defaults, dict) else {}
    return InstalledEnvironment(
        name=install.name,
        version=install.version,
        digest=install.digest,
        source=install.source,
        spec_digest=spec_digest if isinstance(spec_digest, str) else None,
        default_vcpus=int(defaults.get("vcpus", 1)),
        default_memory_mib=int(defaults.get("memoryMiB", 512)),
    )


def _removed(path: Path, reason: str) -> PrunedItem:
    size = store.disk_usage(path)
    store.remove(path)
    return PrunedItem(path=path, reason=reason, size=size)
