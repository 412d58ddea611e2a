"""Build the guest agent (static C) and pack it as /init of a tiny initramfs (cpio newc).

The result is cached by the digest of the agent's sources and compile flags:
``<cache>/agent/<source-digest>/agent.cpio``. Builds are deterministic (no timestamps, fixed
owners, mtimes 0), atomic (temp dir renamed into place) and file-locked, so concurrent
processes build once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import resources
from pathlib import Path

from pyro import paths
from pyro.errors import BuildError, CacheError

# Part of the source digest: changing flags or the cpio layout must change the cache key.
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-fno-asynchronous-unwind-tables")
_LAYOUT_VERSION = "1"
_COMPILERS = ("musl-gcc", "gcc")
_TAIL_LINES = 30


def _sources() -> list[tuple[str, bytes]]:
    """(file name, content) of every agent source file, sorted by name."""
    agent_dir = resources.files("pyro.guest") / "agent"
    found = [
        (entry.name, entry.read_bytes())
        for entry in agent_dir.iterdir()
        if entry.name.endswith((".c", ".h"))
    ]
    return sorted(found)


def agent_source_digest() -> str:
    """``sha256:…`` over the agent sources, compile flags and initramfs layout."""
    h = hashlib.sha256()
    h.update(f"layout={_LAYOUT_VERSION}\ncflags={' '.join(CFLAGS)}\n".encode())
    for name, data in _sources():
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return "sha256:" + h.hexdigest()


def _initrd_path(cache_root: Path | None) -> Path:
    root = cache_root if cache_root is not None else paths.cache_dir()
    return root / "agent" / agent_source_digest().removeprefix("sha256:") / "agent.cpio"


def agent_digest(cache_root: Path | None = None) -> str | None:
    """``sha256:…`` of the built agent initramfs, or None if it has not been built yet."""
    path = _initrd_path(cache_root)
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def build_agent_initrd(cache_root: Path | None = None) -> Path:
    """The agent initramfs, built first if this source digest is not cached yet.

    Raises:
        BuildError: if no C compiler is installed or compiling fails (with its output's tail).
        CacheError: if the cache directory cannot be written.
    """
    root = cache_root if cache_root is not None else paths.cache_dir()
    target = _initrd_path(root)
    if target.is_file():
        return target
    from filelock import FileLock  # only to build: a run finds the initrd built

    try:
        (root / "locks").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / "locks" / f"agent-{target.parent.name}.lock")):
            if target.is_file():
                return target  # another process built it while we waited
            import tempfile  # only to build

            work = Path(tempfile.mkdtemp(prefix="agent-", dir=root / "tmp"))
            try:
                out_dir = work / "out"
                out_dir.mkdir()
                agent = _compile(work)
                (out_dir / "agent.cpio").write_bytes(pack_initrd(agent.read_bytes()))
                target.parent.parent.mkdir(parents=True, exist_ok=True)
                os.rename(out_dir, target.parent)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except OSError as exc:
        raise CacheError(f"cannot write the agent initramfs under {root}: {exc}") from exc
    return target


def build_agent_binary(dest_dir: Path) -> Path:
    """Compile the agent into dest_dir (for host-side tests of the real agent).

    Raises:
        BuildError: if no C compiler is installed or compiling fails.
    """
    return _compile(dest_dir)


def _compile(work: Path) -> Path:
    src = work / "src"
    src.mkdir(exist_ok=True)
    for name, data in _sources():
        (src / name).write_bytes(data)
    compiler = next((c for c in _COMPILERS if shutil.which(c)), None)
    if compiler is None:
        raise BuildError(
            "cannot build the guest agent: no C compiler (musl-gcc or gcc) found",
            "install one, e.g. 'apt-get install musl-tools' (or build-essential)",
        )
    out = work / "pyro-agent"
    sources = sorted(str(p) for p in src.glob("*.c"))
    cmd = [compiler, *CFLAGS, f"-ffile-prefix-map={src}=.", "-o", str(out), *sources]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "LC_ALL": "C"}
    import subprocess  # only to build

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {compiler} to build the guest agent: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise BuildError(
            f"compiling the guest agent with {compiler} failed (exit {proc.returncode}):\n{tail}"
        )
    return out


# -- cpio (newc) -----------------------------------------------------------------------------


def _cpio_entry(
    ino: int, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
) -> bytes:
    nlink = 2 if mode & 0o170000 == 0o040000 else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    blob = header + name.encode() + b"\0"
    blob += b"\0" * (-len(blob) % 4)
    return blob + data + b"\0" * (-len(data) % 4)


def pack_initrd(agent: bytes) -> bytes:
    """A newc cpio archive holding the agent as /init plus the mount points it needs."""
    entries = [
        (".", 0o040755, b"", (0, 0)),
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),  # so the kernel gives /init a console
        ("init", 0o100755, agent, (0, 0)),
        ("newroot", 0o040755, b"", (0, 0)),
        ("proc", 0o040755, b"", (0, 0)),
        ("sys", 0o040755, b"", (0, 0)),
    ]
    parts = [_cpio_entry(i + 1, n, m, d, r) for i, (n, m, d, r) in enumerate(entries)]
    parts.append(_cpio_entry(0, "TRAILER!!!", 0))
    archive = b"".join(parts)
    return archive + b"\0" * (-len(archive) % 512)
