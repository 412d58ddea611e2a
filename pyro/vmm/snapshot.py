"""Saved ready guests ("warm starts"): a VM saved right after its agent's hello, restored
by later runs instead of booting.

Layout: ``$PYRO_CACHE_DIR/snapshots/<key digest>/`` holds

``state``       QEMU's migration stream: device state only (tens of kB)
``ram``         the guest RAM, sparse (as long as the guest's memory, holding only the
                pages the guest touched), mapped copy-on-write by each restore
``disk.qcow2``  the VM's disk at the same instant (qcow2 over the environment's rootfs)
``overlay.qcow2`` an empty qcow2 over ``disk.qcow2``: each restore copies it (no qemu-img)
``meta.json``   the key's fields and the size and digest of each file (written last)

A snapshot is **content-addressed**: its directory is named by the digest of everything
that must match for the saved state to be meaningful (:class:`SnapshotKey`); a change of
environment, kernel, agent, VMM version, machine shape or kernel command line is a new key.
It is **atomic**: built in a temp directory under a per-key file lock and renamed into
place. It is **validated before use**: a missing, truncated or altered file fails the
check, the snapshot is discarded and the run boots cold (and saves a new one).

Only the key's creator holds the per-key lock, and nobody waits for it: a run that finds
the lock taken boots cold without saving, so concurrent runs never serialise here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro import paths
from pyro.errors import VMMError
from pyro.vmm.sparse import sparse_digest

if TYPE_CHECKING:
    from pyro.vmm.base import Backend, VMConfig, VMHandle

#: 5: every QEMU VM of a run has the spare disk (pyro.machines.pushdisk), so a guest saved
#: before it cannot be restored with it.
FORMAT = 5
STATE = "state"
RAM = "ram"
DISK = "disk.qcow2"
OVERLAY = "overlay.qcow2"
META = "meta.json"
FILES = (STATE, RAM, DISK, OVERLAY)
#: ``PYRO_WARM=0`` turns warm starts off (no restore, no save); ``--cold`` sets it per run.
WARM_ENV = "PYRO_WARM"
#: Saved guests kept at most (sizes: docs/performance.md, "The cache entry").
MAX_SNAPSHOTS = 16


def warm_enabled() -> bool:
    """False when ``PYRO_WARM=0`` (or ``false``/``no``/``off``) is set."""
    value = os.environ.get(WARM_ENV, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def restorable(*, network_policy: str, publish: bool, kept: bool) -> bool:
    """Whether a run of this shape may start from (or save) a snapshot.

    Network policy ``off``, or ``egress`` without published ports: a saved egress guest
    has no connections open, and its user-mode network (address, gateway, DNS forwarder)
    is the same for every egress run, so a restore of that policy only needs a snapshot
    saved with it (the key says which). Not ``allowlist``, whose forwards and /etc/hosts
    differ per run, and not published ports. Only VMs deleted after the run: a kept VM's
    disk would stay backed by the snapshot's disk, which a rebuild of the snapshot replaces.
    """
    return network_policy in ("off", "egress") and not publish and not kept


@dataclass(frozen=True)
class SnapshotKey:
    """Everything a saved guest depends on. Paths name content-addressed cache entries."""

    environment_digest: str
    agent_digest: str
    backend: str
    vmm_version: str
    vcpus: int
    memory_mib: int
    kernel: str
    rootfs: str
    cmdline: str
    network: str
    """The network policy the guest was saved with: ``off`` or ``egress``."""

    def digest(self) -> str:
        """Hex digest naming the snapshot's directory."""
        body = json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:40]

    @classmethod
    def from_dict(cls, data: Any) -> SnapshotKey | None:
        """The key recorded in a meta.json, or None when it is malformed."""
        if not isinstance(data, dict):
            return None
        try:
            values = {f.name: data[f.name] for f in fields(cls)}
        except KeyError:
            return None
        if not all(isinstance(values[n], int) for n in ("vcpus", "memory_mib")):
            return None
        if not all(isinstance(v, str | int) for v in values.values()):
            return None
        return cls(**values)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot that passed :meth:`SnapshotStore.find`'s check."""

    dir: Path
    key: SnapshotKey

    @property
    def state(self) -> Path:
        return self.dir / STATE

    @property
    def ram(self) -> Path:
        return self.dir / RAM

    @property
    def disk(self) -> Path:
        return self.dir / DISK

    @property
    def overlay(self) -> Path:
        return self.dir / OVERLAY

    def verify(self) -> None:
        """Hash the files against meta.json (the full check :meth:`SnapshotStore.find`
        does by default; a restore may run it while the VMM starts).

        Raises:
            VMMError: when the snapshot must not be used.
        """
        reason = check(self.dir, self.key, verify=True)
        if reason is not None:
            raise VMMError(
                f"the saved VM in {self.dir} is damaged: {reason}",
                hint="it is discarded; the next cold boot saves a new one",
            )

    def restore(self, backend: Backend, config: VMConfig) -> VMHandle:
        """Start ``config``'s VM from this saved guest (QEMU only). The files are hashed
        while QEMU starts; QEMU gets the state only once they check out.

        Raises:
            VMMError: the backend cannot restore, the files are damaged, or QEMU refused.
        """
        from concurrent.futures import ThreadPoolExecutor

        from pyro.vmm.qemu import QemuBackend

        if not isinstance(backend, QemuBackend):
            raise VMMError(f"backend {backend.name} cannot restore saved VMs")
        with ThreadPoolExecutor(1, thread_name_prefix="pyro-snapshot-verify") as pool:
            verified = pool.submit(self.verify)
            return backend.restore(
                config,
                self.state,
                self.ram,
                self.disk,
                overlay_template=self.overlay,
                before_load=verified.result,
            )


def check(directory: Path, key: SnapshotKey | None, *, verify: bool) -> str | None:
    """Why the snapshot in ``directory`` must not be used, or None when it is fine.

    ``key`` None accepts any well-formed key. Sizes are always compared; ``verify`` also
    hashes the files' data (only the data of the sparse RAM file, see
    :func:`~pyro.vmm.sparse.sparse_digest`), except files not written since an earlier
    check hashed them (``verified.json``).
    """
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, ValueError) as exc:
        return f"meta.json is unreadable: {exc}"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return "meta.json has another format"
    recorded = SnapshotKey.from_dict(meta.get("key"))
    if recorded is None:
        return "meta.json has no valid key"
    if key is not None and recorded != key:
        return "it was saved for another key"
    if recorded.digest() != directory.name:
        return "its directory does not match its key"
    files = meta.get("files")
    if not isinstance(files, dict):
        return "meta.json lists no files"
    known = _read_verified(directory) if verify else {}
    stats: dict[str, os.stat_result] = {}
    for name in FILES:
        entry = files.get(name)
        if not isinstance(entry, dict):
            return f"meta.json does not list {name}"
        try:
            stats[name] = stat = (directory / name).stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != entry.get("size"):
            return f"{name} has {stat.st_size} bytes, not {entry.get('size')}"
        if verify and known.get(name) != _fingerprint(stat):
            try:
                digest = sparse_digest(directory / name)
            except OSError as exc:
                return f"{name} is unreadable: {exc.strerror}"
            if digest != entry.get("digest"):
                return f"{name} does not match its recorded digest"
    if verify:
        _record_verified(directory, stats, known)
    return None


# A file hashed once need not be hashed again while nothing has written to it: every write
# changes its mtime and ctime (ctime cannot be set from user space). A fingerprint is only
# recorded for a file last changed well before the hash began, as git does for its index,
# so a write within the same clock tick as the hash cannot go unnoticed.
VERIFIED = "verified.json"
_SETTLED_S = 2.0


def _fingerprint(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _read_verified(directory: Path) -> dict[str, Any]:
    try:
        known = json.loads((directory / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _record_verified(
    directory: Path, stats: dict[str, os.stat_result], known: dict[str, Any]
) -> None:
    settled = time.time_ns() - int(_SETTLED_S * 1e9)
    fingerprints = {
        name: _fingerprint(stat)
        for name, stat in stats.items()
        if max(stat.st_mtime_ns, stat.st_ctime_ns) < settled
    }
    if not fingerprints or fingerprints == known:
        return
    tmp = directory / f".{VERIFIED}.{secrets.token_hex(4)}"
    with contextlib.suppress(OSError):  # only an optimisation: hashed again next time
        tmp.write_text(json.dumps(fingerprints), encoding="utf-8")
        os.replace(tmp, directory / VERIFIED)
    with contextlib.suppress(OSError):
        tmp.unlink()


class SnapshotStore:
    """The snapshots under ``<cache>/snapshots``."""

    def __init__(self, cache_root: Path | None = None) -> None:
        self.root = (cache_root or paths.cache_dir()) / "snapshots"

    def path(self, key: SnapshotKey) -> Path:
        return self.root / key.digest()

    def find(self, key: SnapshotKey, *, verify: bool = True) -> Snapshot | None:
        """The valid snapshot for ``key``; an invalid one is discarded (None is returned)."""
        directory = self.path(key)
        if not directory.is_dir():
            return None
        if check(directory, key, verify=verify) is not None:
            self.discard(key)
            return None
        return Snapshot(directory, key)

    def saved(self) -> list[SnapshotKey]:
        """Keys of the snapshots that pass the cheap check (sizes, no hashing)."""
        found: list[SnapshotKey] = []
        if not self.root.is_dir():
            return found
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or check(child, None, verify=False) is not None:
                continue
            key = _read_key(child)
            if key is not None:
                found.append(key)
        return found

    def discard(self, key: SnapshotKey) -> None:
        """Remove the snapshot of ``key`` if present.

        Renamed away first, so no reader sees a half-deleted directory; VMs running from
        it keep their open files (QEMU holds the backing disk open).
        """
        trash = self.root / f".trash-{key.digest()}-{secrets.token_hex(4)}"
        try:
            os.rename(self.path(key), trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def creating(self, key: SnapshotKey) -> Iterator[Path | None]:
        """A fresh work directory to save ``key`` into, or None when another process is
        saving it right now (the caller then just goes on without saving).

        Publish the work with :meth:`publish` inside the block; whatever is left is removed.
        """
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock, Timeout

        lock = FileLock(str(locks / f"{key.digest()}.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            yield None
            return
        work = self.root / f".tmp-{key.digest()}-{secrets.token_hex(4)}"
        try:
            # Holding the key's lock: leftovers of a creator that was killed are ours to remove.
            for stale in self.root.glob(f".tmp-{key.digest()}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            work.mkdir()
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
            lock.release()

    def publish(self, key: SnapshotKey, work: Path) -> Snapshot:
        """Record sizes and digests of the files in ``work`` and move it into place.

        Raises:
            OSError: when the files cannot be read or the rename fails.
        """
        meta = {
            "format": FORMAT,
            "key": asdict(key),
            "created_at": time.time(),
            "files": {
                name: {"size": (work / name).stat().st_size, "digest": sparse_digest(work / name)}
                for name in FILES
            },
        }
        tmp = work / f"{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, work / META)
        target = self.path(key)
        self.discard(key)  # an invalid leftover; a valid one cannot exist while we hold the lock
        os.rename(work, target)
        self.prune(keep=MAX_SNAPSHOTS)
        return Snapshot(target, key)

    def prune(self, *, keep: int) -> list[SnapshotKey]:
        """Discard invalid entries and all but the ``keep`` most recently saved snapshots;
        returns the keys of the valid ones discarded.

        Keys change with every environment, agent or VMM update and old keys are never
        matched again, so without this the store would only grow.
        """
        if self.root.is_dir():
            # Entries of another format or otherwise invalid are never used: drop them.
            # (Published entries appear by an atomic rename, complete with meta.json.)
            for child in self.root.iterdir():
                if not child.name.startswith(".") and check(child, None, verify=False):
                    trash = self.root / f".trash-{child.name}-{secrets.token_hex(4)}"
                    with contextlib.suppress(OSError):
                        os.rename(child, trash)
                        shutil.rmtree(trash, ignore_errors=True)
        dated = sorted(
            ((_created_at(self.path(key)), key) for key in self.saved()),
            key=lambda item: item[0],
            reverse=True,
        )
        old = [key for _, key in dated[keep:]]
        for key in old:
            self.discard(key)
        return old


def _read_key(directory: Path) -> SnapshotKey | None:
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return SnapshotKey.from_dict(meta.get("key")) if isinstance(meta, dict) else None


def _created_at(directory: Path) -> float:
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        return float(meta.get("created_at", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0
