"""File-level helpers of the environment cache: strict checks, hashing, atomic writes.

Every check uses ``lstat``: a symlink where a file or directory should be makes the
install invalid, whatever it points at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARTIFACT_FILES = {"kernel": "vmlinux", "rootfs": "rootfs.ext4"}
MEDIA_TYPES = {
    "kernel": "application/vnd.pyro.kernel.v1",
    "rootfs": "application/vnd.pyro.rootfs.ext4.v1",
}
MANIFEST_FILE = "manifest.json"
VERIFIED_FILE = "verified.json"
CURRENT_FILE = "current.json"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DIGEST_DIR_RE = re.compile(r"^[0-9a-f]{64}$")
# Work dirs of other writers (builders) carry no owner pid; prune removes them only when
# nothing can plausibly still be using them.
UNOWNED_TMP_MAX_AGE = 24 * 3600.0
_CHUNK = 1 << 20


class Invalid(Exception):
    """Internal: an install (or part of one) failed a check; the message says which."""


@dataclass(frozen=True)
class PrunedItem:
    """Something prune removed, and why."""

    path: Path
    reason: str
    size: int


def canonical_json(value: Any) -> bytes:
    """The bytes whose sha256 is a manifest's digest: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_digest(artifacts: Any) -> str | None:
    """``sha256:`` over the sha256 of each boot artifact (a manifest's ``artifacts``), by role.

    What an install *holds*, whatever its manifest says besides (where it was pulled from,
    how it was built): the same kernel and rootfs bytes give the same digest on any machine.
    None when ``artifacts`` does not list a sha256 for every role.
    """
    if not isinstance(artifacts, Mapping):
        return None
    digests: dict[str, str] = {}
    for role in ARTIFACT_FILES:
        entry = artifacts.get(role)
        digest = entry.get("sha256") if isinstance(entry, Mapping) else None
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            return None
        digests[role] = digest
    return "sha256:" + hashlib.sha256(canonical_json(digests)).hexdigest()


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks (never whole into memory)."""
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def jsonable(value: Any) -> Any:
    """``value`` with paths, tuples and other objects turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def require_dir(path: Path, what: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise Invalid(f"{what} {path.name} is missing") from None
    if stat.S_ISLNK(mode):
        raise Invalid(f"{what} {path.name} is a symlink")
    if not stat.S_ISDIR(mode):
        raise Invalid(f"{what} {path.name} is not a directory")


def require_file(path: Path) -> os.stat_result:
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise Invalid(f"{path.name} is missing") from None
    if stat.S_ISLNK(info.st_mode):
        raise Invalid(f"{path.name} is a symlink, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise Invalid(f"{path.name} is not a regular file")
    return info


def read_json(path: Path) -> Any:
    require_file(path)
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise Invalid(f"{path.name} is unreadable: {exc}") from None


def read_current(path: Path) -> tuple[str, str]:
    """(name, digest) from a current.json, strictly."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise Invalid(f"{path.name} is not a JSON object")
    name, digest = data.get("name"), data.get("digest")
    if not isinstance(name, str) or not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise Invalid(f"{path.name} lacks a name and a sha256 digest")
    return name, digest


def recorded_names(environments_dir: Path) -> list[str]:
    """The names in every readable ``<slug>/current.json`` under ``environments_dir``,
    by folder (valid installs or not); [] when the folder cannot be read."""
    names: list[str] = []
    try:
        entries = sorted(os.scandir(environments_dir), key=lambda e: e.name)
    except OSError:
        return names
    for entry in entries:
        with contextlib.suppress(Invalid):
            names.append(read_current(Path(entry.path) / CURRENT_FILE)[0])
    return names


def check_install(where: Path, digest: str, *, full: bool) -> dict[str, Any]:
    """The manifest of the install in ``where`` after checking it; raises Invalid.

    ``full`` hashes every artifact. Otherwise artifacts are hashed only when their stat
    signature differs from the one recorded at the last successful verification.
    """
    require_dir(where, "install directory")
    require_file(where / MANIFEST_FILE)
    try:
        data = (where / MANIFEST_FILE).read_bytes()
    except OSError as exc:
        raise Invalid(f"{MANIFEST_FILE} is unreadable: {exc}") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise Invalid(f"{MANIFEST_FILE} does not match digest {digest}")
    try:
        manifest = json.loads(data)
    except ValueError:
        raise Invalid(f"{MANIFEST_FILE} is not JSON") from None
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(artifacts, dict):
        raise Invalid(f"{MANIFEST_FILE} lists no artifacts")
    stamp = _read_stamp(where)
    files = stamp.get("files") if stamp.get("digest") == digest else None
    files = files if isinstance(files, dict) else {}
    fresh = True
    for role, file in ARTIFACT_FILES.items():
        entry = artifacts.get(role)
        if not isinstance(entry, dict) or entry.get("file") != file:
            raise Invalid(f"{MANIFEST_FILE} does not list the {role} as {file}")
        info = require_file(where / file)
        if info.st_size != entry.get("size"):
            raise Invalid(f"{file} is {info.st_size} bytes, the manifest says {entry.get('size')}")
        if full or files.get(file) != _signature(info):
            fresh = False
            if sha256_file(where / file) != entry.get("sha256"):
                # Forget the old verification so quick checks stop trusting this install.
                with contextlib.suppress(OSError):
                    os.unlink(where / VERIFIED_FILE)
                raise Invalid(f"{file} does not match its sha256 in the manifest")
    if not fresh:
        # Best effort: a read-only cache still works, it just hashes again next time.
        with contextlib.suppress(OSError):
            record_verified(where, digest)
    return dict(manifest)


def _signature(info: os.stat_result) -> list[int]:
    # The ctime too: any write or metadata change moves it, and user space cannot set it
    # back the way it can the mtime (touch -d, rsync --inplace).
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


def _read_stamp(where: Path) -> dict[str, Any]:
    try:
        data = read_json(where / VERIFIED_FILE)
    except Invalid:
        return {}
    return data if isinstance(data, dict) else {}


def record_verified(where: Path, digest: str) -> None:
    """Remember the stat signature of artifacts just hashed and found to match ``digest``."""
    files = {file: _signature(os.lstat(where / file)) for file in ARTIFACT_FILES.values()}
    write_file(where / VERIFIED_FILE, canonical_json({"digest": digest, "files": files}))


def stage_artifacts(
    staged: Path, work: Path, known: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Move each staged artifact into ``work``, fsync and hash it; the manifest's artifacts.

    ``known`` maps file names to sha256 digests the caller computed over exactly the bytes
    it wrote (a pull hashes while decompressing); a moved file is not read again, a copied
    one always is.
    """
    artifacts: dict[str, Any] = {}
    for role, file in ARTIFACT_FILES.items():
        source = staged / file
        try:
            info = require_file(source)
        except Invalid as exc:
            raise OSError(f"staged {role} {source}: {exc}") from None
        target = work / file
        digest = (known or {}).get(file)
        if source != target:
            try:
                os.rename(source, target)
            except OSError:
                shutil.copyfile(source, target)
                digest = None
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
        artifacts[role] = {
            "file": file,
            "sha256": digest or sha256_file(target),
            "size": os.lstat(target).st_size,
            "mediaType": MEDIA_TYPES[role],
        }
        if artifacts[role]["size"] != info.st_size:
            raise OSError(f"staged {role} {source} changed while it was installed")
    return artifacts


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Remove a file, symlink (not its target) or directory tree; missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (0 for a symlink; never follows one)."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size if stat.S_ISREG(info.st_mode) else 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def metadata_dict(metadata: Any) -> dict[str, Any]:
    """Install metadata as plain JSON: from ``to_dict()``, a dataclass, pydantic or a mapping."""
    if callable(getattr(metadata, "to_dict", None)):
        data: Any = metadata.to_dict()
    elif dataclasses.is_dataclass(metadata) and not isinstance(metadata, type):
        data = dataclasses.asdict(metadata)
    elif hasattr(metadata, "model_dump"):
        data = metadata.model_dump(mode="json")
    elif isinstance(metadata, Mapping):
        data = dict(metadata)
    else:
        raise TypeError(f"cannot record install metadata of type {type(metadata).__name__}")
    # Paths and other objects become strings so the manifest stays plain JSON.
    return dict(jsonable(data))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_work_dir(parent: Path) -> Path:
    """A new directory in ``parent`` named ``<pid>-<random>`` (prune tells live from stale)."""
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))


def link_or_copy(source: Path, target: Path) -> None:
    if not stat.S_ISREG(os.lstat(source).st_mode):
        raise OSError(f"{source} is not a regular file")
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def dirs_in_use(state_root: Path) -> set[Path]:
    """Install directories that VMs recorded under ``state_root/vms/*/vm.json`` boot from.

    Their overlays use the install's rootfs as backing file, so pruning it would break them.
    Read as plain JSON (not through pyro.machines.registry) so pruning never depends on the
    VM registry.
    """
    found: set[Path] = set()
    for record in (state_root / "vms").glob("*/vm.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            data = json.loads(record.read_bytes())
            for key in ("rootfs", "kernel"):
                if isinstance(data.get(key), str):
                    found.add(Path(data[key]).parent)
    return found


def removed(path: Path, reason: str) -> PrunedItem:
    """Remove ``path`` (never following a symlink) and say what it was."""
    size = disk_usage(path)
    remove(path)
    return PrunedItem(path=path, reason=reason, size=size)


def remove_stale_tmp(
    tmp_root: Path, *, unowned_older_than: float | None = None
) -> list[PrunedItem]:
    """Remove our work dirs whose owner process is dead.

    ``tmp/`` is shared with the kernel, rootfs and agent builders, whose work dirs
    (``kernel-…``, ``agent-…``) carry no pid: those are left alone, except by prune
    when they are older than ``unowned_older_than`` seconds.
    """
    pruned = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp_root):
            pid, sep, _ = entry.name.partition("-")
            if pid.isdigit() and sep:
                if not pid_alive(int(pid)):
                    pruned.append(removed(Path(entry.path), "left over by a dead process"))
                continue
            if unowned_older_than is None:
                continue
            with contextlib.suppress(OSError):
                age = now - entry.stat(follow_symlinks=False).st_mtime
                if age > unowned_older_than:
                    pruned.append(removed(Path(entry.path), "stale work dir"))
    return pruned
