"""The local environment cache: content-addressed, verified, atomically written installs.

Layout under the cache root (docs/cache.md)::

    environments/<slug>/<manifest-hex>/{manifest.json, vmlinux, rootfs.ext4, verified.json}
    environments/<slug>/current.json      {"name": ..., "digest": "sha256:..."}
    tmp/<pid>-<token>/                    work dirs, renamed into place
    locks/<slug>.lock                     one file lock per environment name

An install is used only when current.json, its manifest and every artifact are regular
files (never symlinks) and the artifacts' sha256 match the manifest. Hashing a 1 GiB rootfs
on every lookup would be slow, so a successful full verification records each file's
(size, mtime, ctime, inode, device) in verified.json; a lookup whose stat signature still
matches trusts that verification, anything else is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from filelock import FileLock

from pyro import paths
from pyro.environments.cache import files as store
from pyro.environments.cache.files import (
    ARTIFACT_FILES,
    CURRENT_FILE,
    DIGEST_DIR_RE,
    MANIFEST_FILE,
    Invalid,
    PrunedItem,
    canonical_json,
    content_digest,
    remove_stale_tmp,
)
from pyro.errors import CacheError, EnvironmentInvalidError
from pyro.plan.inventory import InstalledEnvironment


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
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """What the pull that returned this install wants the user to know (not stored)."""

    @property
    def source(self) -> str | None:
        """The ``oci://…@sha256:…`` reference it was pulled from; None when built here."""
        source = self.manifest.get("source")
        return source if isinstance(source, str) else None

    @property
    def default_vcpus(self) -> int:
        """vCPUs the environment's spec asks for by default (1 when not recorded)."""
        return int(self._defaults.get("vcpus", 1))

    @property
    def default_memory_mib(self) -> int:
        """Guest memory the environment's spec asks for by default (512 when not recorded)."""
        return int(self._defaults.get("memoryMiB", 512))

    @property
    def _defaults(self) -> dict[str, Any]:
        defaults = self.manifest.get("defaults")
        return defaults if isinstance(defaults, dict) else {}

    @property
    def content_digest(self) -> str:
        """sha256 over the kernel's and rootfs's sha256: equal for byte-identical installs
        on any machine, unlike :attr:`digest` (the manifest's, which records the source)."""
        found = content_digest(self.manifest.get("artifacts"))
        # A valid install's manifest lists both artifacts with their sha256 (check_install).
        return found if found is not None else self.digest

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
            from filelock import FileLock  # only where a lock is taken: reads need none

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
        remove_stale_tmp(self.tmp_root)
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
            return InstallStatus("installed", install=self.current(name, full=False))
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
            return self.current(name, full=True)
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
        return store.recorded_names(self.environments_dir)

    def current(self, name: str, *, full: bool) -> Install:
        """The install ``name`` means after a quick (or ``full``) check; raises Invalid."""
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
            if DIGEST_DIR_RE.match(entry.name) and entry.is_dir(follow_symlinks=False):
                try:
                    store.check_install(Path(entry.path), "sha256:" + entry.name, full=False)
                    continue
                except Invalid:
                    pass
            store.remove(Path(entry.path))


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
    return InstalledEnvironment(
        name=install.name,
        version=install.version,
        digest=install.digest,
        content_digest=install.content_digest,
        source=install.source,
        spec_digest=spec_digest if isinstance(spec_digest, str) else None,
        default_vcpus=install.default_vcpus,
        default_memory_mib=install.default_memory_mib,
    )


__all__ = ["Cache", "Install", "InstallStatus", "PrunedItem", "slug"]
