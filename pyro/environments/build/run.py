"""Shared plumbing of the kernel and rootfs builders: logged commands, locks, atomic publish."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyro.errors import BuildError

Log = Callable[[str], None]

# Bumped whenever a recipe changes what it produces from the same inputs, so digests
# made by an older pyro never name an artifact made by a newer recipe (or vice versa).
KERNEL_RECIPE_VERSION = "kernel/1"
ROOTFS_RECIPE_VERSION = "rootfs/1"
BUILDER_VERSION = f"{KERNEL_RECIPE_VERSION}+{ROOTFS_RECIPE_VERSION}"

LOG_TAIL_LINES = 25
LOCK_TIMEOUT_S = 3 * 3600


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a build log ('' if it cannot be read)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(
    argv: Sequence[str],
    *,
    log_path: Path,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``argv`` with stdout and stderr appended to ``log_path``.

    Raises:
        BuildError: the program is missing or exits non-zero; the summary carries the log
            tail and the log path.
    """
    import subprocess  # a build's own: planning only reads this module's constants

    full_env = dict(os.environ)
    full_env.update(env or {})
    with log_path.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                list(argv), cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        except OSError as exc:
            raise BuildError(
                f"{what}: cannot run {argv[0]}: {exc.strerror or exc}",
                hint="install the host build tools ('pyro doctor' lists them)",
            ) from exc
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed (exit {proc.returncode}); log: {log_path}\n{log_tail(log_path)}",
            hint=f"read the full build log at {log_path}",
        )


def capture(argv: Sequence[str], *, what: str) -> str:
    """Run a short query command and return its stdout.

    Raises:
        BuildError: the program is missing or exits non-zero.
    """
    import subprocess

    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


@contextmanager
def locked(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive file lock, so concurrent processes build a thing once.

    Raises:
        BuildError: the lock is not free within LOCK_TIMEOUT_S.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise BuildError(
            f"{what}: another build holds {lock_path} for too long",
            hint="wait for the other build to finish, or remove a stale lock file",
        ) from exc
    try:
        yield
    finally:
        lock.release()


@contextmanager
def work_dir(cache_root: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``<cache_root>/tmp/``, removed afterwards.

    It lives on the cache's file system so results can be renamed into place atomically.
    """
    import tempfile

    tmp_root = cache_root / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Rename a finished ``staged`` directory to ``final``; a racing winner is kept."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        staged.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        # Another process published the same content-addressed result first.
        shutil.rmtree(staged, ignore_errors=True)


def say(log: Log | None, message: str) -> None:
    """Report build progress to the caller, if it asked for it."""
    if log is not None:
        log(message)
