"""Where pyro keeps things on the host: cache (environments, kernels, agent), state (VMs, tasks).

The state folder holds what only its user may see (VM records, consoles, task journals,
secrets, crash logs that name command lines), so everything pyro makes there is private:
folders 0700, files 0600, whatever the umask. :func:`private_dir` also tightens a folder
an older pyro made 0755 the next time it is used.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: The folder name pyro gets in the user's cache and state folders.
APP_NAME = "pyro"

#: Modes of everything pyro creates under the state folder.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def cache_dir() -> Path:
    """``$PYRO_CACHE_DIR``, else the user cache folder (``$XDG_CACHE_HOME/pyro``, else
    ``~/.cache/pyro`` on Linux)."""
    explicit = os.environ.get("PYRO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    import platformdirs  # only when no override is set: `import pyro.paths` stays cheap

    return platformdirs.user_cache_path(APP_NAME, appauthor=False).absolute()


def state_dir() -> Path:
    """``$PYRO_STATE_DIR``, else the user state folder (``$XDG_STATE_HOME/pyro``, else
    ``~/.local/state/pyro`` on Linux)."""
    explicit = os.environ.get("PYRO_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    import platformdirs

    return platformdirs.user_state_path(APP_NAME, appauthor=False).absolute()


def private_dir(path: Path, *, create: bool = True) -> Path:
    """Make ``path`` an owner-only folder (0700): created when missing (unless not
    ``create``), tightened when it is more open (made by an older pyro, or under a lax
    umask). Missing parents are created with the default mode. Returns ``path``.

    Raises:
        OSError: the folder cannot be created, or is not ours to change.
    """
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        if create:
            raise
        return path
    if mode != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Restrict an existing regular file to its owner (0600); a missing file is fine.

    Raises:
        OSError: the file is not ours to change.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
        os.chmod(path, PRIVATE_FILE_MODE)


def write_private(path: Path, data: str | bytes) -> None:
    """Replace ``path`` atomically with ``data`` in a new 0600 file (never through a link).

    Raises:
        OSError: the file cannot be written.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken bits away; never adds
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
