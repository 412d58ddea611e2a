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
* **A bounded console.** A guest can write to its serial console as fast as the VMM lets
  it. The VMM's stdout (the console) is a pipe to :mod:`pyro.vmm.console`, which appends
  to ``serial.log`` and keeps it under ``SERIAL_LOG_MAX_BYTES`` as the bytes arrive, and
  exits when the VMM does. No pyro command has to come by to trim it.
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
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro.errors import VMMError

_PR_SET_PDEATHSIG = 1
#: The most a serial log holds on disk (``$PYRO_SERIAL_LOG_MAX_BYTES`` overrides it).
SERIAL_LOG_MAX_BYTES = 4 * 1024 * 1024
SERIAL_LOG_MAX_ENV = "PYRO_SERIAL_LOG_MAX_BYTES"
#: The first bytes of a serial log (the boot) are kept when it is trimmed.
SERIAL_LOG_HEAD_BYTES = 64 * 1024
#: What VMMs and console keepers create in the VM's folder (sockets, pidfile, logs) is
#: owner-only, whatever pyro's own umask.
VMM_UMASK = 0o077
#: The console keeper, run as a script next to this module (see pyro.vmm.console).
CONSOLE_SCRIPT = Path(__file__).with_name("console.py")


# Resolved once in the parent: dlopen() in a forked child of a threaded process can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True)
_prctl = _LIBC.prctl


def _die_with_parent(parent_pid: int) -> None:
    # Runs in the child between fork and exec: keep it to a syscall or two.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect; then nobody would kill us.
    if os.getppid() != parent_pid:
        os._exit(1)


@dataclass(frozen=True)
class Started:
    """A VMM process just started, and the keeper of its console (if it has one)."""

    vmm: subprocess.Popen[bytes]
    console: subprocess.Popen[bytes] | None


def serial_log_max_bytes() -> int:
    """The serial log bound: ``$PYRO_SERIAL_LOG_MAX_BYTES``, else :data:`SERIAL_LOG_MAX_BYTES`.

    Raises:
        VMMError: the variable is not a whole number of at least 65536.
    """
    text = os.environ.get(SERIAL_LOG_MAX_ENV, "").strip()
    if not text:
        return SERIAL_LOG_MAX_BYTES
    if not text.isdigit() or int(text) < 65536:
        raise VMMError(
            f"{SERIAL_LOG_MAX_ENV}={text!r} is not a size in bytes of at least 65536",
            hint=f"unset it (default {SERIAL_LOG_MAX_BYTES}) or give a whole number of bytes",
        )
    return int(text)


def start_process(
    argv: Sequence[str],
    *,
    workdir: Path,
    ephemeral: bool,
    log_path: Path,
    console_log: Path | None = None,
) -> Started:
    """Start a VMM with ``cwd=workdir``; its stderr appends to ``log_path``, and so does its
    stdout unless ``console_log`` is given: then the stdout (the guest console) goes through
    a console keeper into ``console_log``, bounded (see :mod:`pyro.vmm.console`).

    Raises:
        VMMError: when the executable cannot be started.
    """
    parent = os.getpid()
    max_bytes = serial_log_max_bytes()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pipe: tuple[int, int] | None = None
    console: subprocess.Popen[bytes] | None = None
    try:
        if console_log is not None:
            pipe = os.pipe2(os.O_CLOEXEC)
            console = _start_console(console_log.absolute(), pipe[0], log_fd, max_bytes)
        stdout = pipe[1] if pipe is not None else log_fd
        if not ephemeral:
            vmm = subprocess.Popen(
                list(argv),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=log_fd,
                close_fds=True,
                start_new_session=True,
                umask=VMM_UMASK,
            )
        else:
            vmm = _spawner().call(
                lambda: subprocess.Popen(
                    list(argv),
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=log_fd,
                    close_fds=True,
                    umask=VMM_UMASK,
                    process_group=0,
                    preexec_fn=lambda: _die_with_parent(parent),
                )
            )
        return Started(vmm, console)
    except OSError as exc:
        if console is not None:  # it ends as soon as the pipe closes below
            _end_when_closed(console)
        raise VMMError(
            f"cannot start {argv[0]}: {exc.strerror or exc}",
            hint="check that the VMM binary exists and is executable ('pyro doctor')",
        ) from exc
    finally:
        # The keeper sees end of file once the VMM holds the only write end and exits
        # (or at once, when the VMM did not start).
        for fd in (*(pipe or ()), log_fd):
            os.close(fd)


def _end_when_closed(console: subprocess.Popen[bytes]) -> None:
    # Reaped on a thread: it exits once the finally below closes the pipe.
    threading.Thread(target=console.wait, name="pyro-console-reaper", daemon=True).start()


def _start_console(
    path: Path, read_fd: int, log_fd: int, max_bytes: int
) -> subprocess.Popen[bytes]:
    # Its own session: a Ctrl-C meant for pyro must not cut the VMM's last words. It needs
    # no tie to pyro's lifetime: it ends with the VMM's end of the pipe.
    return subprocess.Popen(
        [
            sys.executable, "-I", "-S", str(CONSOLE_SCRIPT),
            str(path), str(max_bytes), str(SERIAL_LOG_HEAD_BYTES),
        ],
        stdin=read_fd,
        stdout=subprocess.DEVNULL,
        stderr=log_fd,
        close_fds=True,
        start_new_session=True,
        umask=VMM_UMASK,
    )  # fmt: skip


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


def tail_text(path: Path, max_bytes: int = 2000) -> str:
    """The last ``max_bytes`` of a log as text, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
