"""Starting VMM processes and reaching their unix sockets, shared by every backend.

Two problems every backend has:

* **Lifetime.** An ephemeral VM must not outlive the pyro process that made it, even when
  that process is SIGKILLed: the child asks the kernel for ``PR_SET_PDEATHSIG(SIGKILL)``.
  The signal fires when the *thread* that forked the child exits, so ephemeral VMMs are
  forked by one spawner thread that lives as long as the process, whichever thread asks.
  It is a daemon thread: it holds no work of its own, so it never keeps the process
  waiting at exit.
  An ephemeral VMM gets its own process group, so a Ctrl-C reaches pyro (which cleans up)
  rather than the VMM. A persistent VM gets its own session and no terminal, so it
  survives the CLI.
* **Socket path length.** ``sun_path`` holds 107 bytes, and state directories (pytest tmp
  dirs, deep $HOME) can be longer. VMMs run with ``cwd=workdir`` and bind *relative* socket
  names; the host connects through ``/proc/self/fd/<dirfd>/<name>``, which is short whatever
  the workdir's length.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyro.errors import VMMError

_PR_SET_PDEATHSIG = 1
_FALLOC_FL_COLLAPSE_RANGE = 0x08
#: Serial logs grow without bound when a guest floods its console; owners trim them.
SERIAL_LOG_MAX_BYTES = 4 * 1024 * 1024
#: The first bytes of a serial log (the boot) are kept when it is trimmed.
SERIAL_LOG_HEAD_BYTES = 64 * 1024


# Resolved once in the parent: dlopen() in a forked child of a threaded process can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True)
_prctl = _LIBC.prctl
_fallocate = _LIBC.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def _die_with_parent(parent_pid: int) -> None:
    # Runs in the child between fork and exec: keep it to a syscall or two.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect; then nobody would kill us.
    if os.getppid() != parent_pid:
        os._exit(1)


def start_process(
    argv: Sequence[str], *, workdir: Path, ephemeral: bool, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a VMM with ``cwd=workdir``; its stdout and stderr append to ``log_path``.

    Raises:
        VMMError: when the executable cannot be started.
    """
    parent = os.getpid()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if not ephemeral:
            return subprocess.Popen(
                list(argv),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                close_fds=True,
                start_new_session=True,
            )
        return _spawner().call(
            lambda: subprocess.Popen(
                list(argv),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                close_fds=True,
                process_group=0,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        )
    except OSError as exc:
        raise VMMError(
            f"cannot start {argv[0]}: {exc.strerror or exc}",
            hint="check that the VMM binary exists and is executable ('pyro doctor')",
        ) from exc
    finally:
        os.close(log_fd)


class _Spawner:
    """A daemon thread that runs the calls handed to it, one at a time."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="pyro-vmm-spawner", daemon=True).start()

    def call(self, fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        """``fn()``, run on the spawner thread (its exception re-raised here)."""
        future: Future[subprocess.Popen[bytes]] = Future()
        self._calls.put((future, fn))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, fn = self._calls.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)


_SPAWNER: _Spawner | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> _Spawner:
    # One long-lived thread forks every ephemeral VMM, so PR_SET_PDEATHSIG follows the
    # process's lifetime, not that of whichever (maybe short-lived) thread called spawn.
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None or os.getpid() != _SPAWNER.pid:  # fresh after a fork
            _SPAWNER = _Spawner()
        return _SPAWNER


@contextmanager
def short_dir(workdir: Path) -> Iterator[str]:
    """Yield a short path (``/proc/self/fd/N``) naming ``workdir`` while the block runs.

    Raises:
        VMMError: when ``workdir`` cannot be opened.
    """
    try:
        fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise VMMError(f"cannot open VM directory {workdir}: {exc.strerror}") from exc
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def connect_unix(workdir: Path, name: str, *, timeout: float) -> socket.socket:
    """Connect a stream socket to ``workdir/name`` via a short path.

    Raises:
        OSError: when the socket is missing or refuses the connection.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        with short_dir(workdir) as short:
            sock.connect(f"{short}/{name}")
    except BaseException:
        sock.close()
        raise
    return sock


def trim_serial_log(path: Path, *, max_bytes: int | None = None, head: int | None = None) -> bool:
    """Keep ``path`` under ``max_bytes``: cut out the middle, keep the boot and the latest tail.

    VMMs write the log with O_APPEND, so cutting it while they run is safe: their next
    write lands at the new end. Returns True when the file was trimmed.
    """
    max_bytes = SERIAL_LOG_MAX_BYTES if max_bytes is None else max_bytes
    head = min(SERIAL_LOG_HEAD_BYTES if head is None else head, max_bytes // 4)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        block = os.fstatvfs(fd).f_bsize
        start = -(-head // block) * block
        length = ((size - max_bytes // 2 - start) // block) * block
        if length > 0 and _collapse(fd, start, length):
            return True
        # The filesystem cannot collapse ranges (tmpfs, overlayfs): rewrite head + tail.
        # Bytes the VMM appends during the rewrite may be lost; the log is best effort.
        kept_head = os.pread(fd, head, 0)
        tail = os.pread(fd, max_bytes // 2, max(0, size - max_bytes // 2))
        os.ftruncate(fd, 0)
        os.write(fd, kept_head + b"\n[pyro: serial log trimmed]\n" + tail)
        return True
    finally:
        os.close(fd)


def _collapse(fd: int, offset: int, length: int) -> bool:
    return int(_fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, offset, length)) == 0


def tail_text(path: Path, max_bytes: int = 2000) -> str:
    """The last ``max_bytes`` of a log as text, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
