"""A task's session keeper, seen from pyro: find it, start it, connect to it, end it.

Every pyro process that talks to a task's agent (an exec, a file copy, a stop) connects to
the task's session keeper (:mod:`pyro.guest.keeper`), which owns the one agent connection
QEMU allows and multiplexes everyone's requests on it, so execs from several processes run
at once. Files in the task's directory:

``session.sock``  the keeper's socket (0600; the directory is the owner's only)
``session.pid``   its PID, written by the process that started it

Finding or starting a keeper happens under the task's session lock, which is held only for
that (never across a command); the keeper takes the same lock before it ends when idle, so
a caller either reaches a live keeper or starts the next one, never one that is leaving.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pyro import paths
from pyro.errors import StateError, VMMError
from pyro.guest import keeper as keeper_program
from pyro.machines.registry import VMRegistry
from pyro.vmm.launch import short_dir

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

SOCK = "session.sock"
PIDFILE = "session.pid"
KEEPER_SCRIPT = Path(keeper_program.__file__)
LOG = "vmm.log"
CONNECT_TIMEOUT_S = 10.0
END_WAIT_S = 5.0
#: The hello through a keeper: the first one waits for the agent, later ones are answered
#: by the keeper.
HELLO_TIMEOUT_S = 30.0


class KeeperSessions:
    """How :class:`pyro.tasks.manager.TaskManager` reaches a task's agent: through the
    task's keeper. The manager holds the session lock around :meth:`connect` + :meth:`start`.
    """

    def __init__(self, registry: VMRegistry) -> None:
        self.registry = registry

    def connect(self, task_id: str) -> AgentClient | None:
        """A connection through the task's live keeper, None when none runs."""
        sock = connect_keeper(self.registry.dir(task_id))
        return None if sock is None else _hello(sock)

    def start(self, task_id: str, lock_file: Path) -> AgentClient:
        """Start the keeper of the running task and connect through it (see start_keeper)."""
        return _hello(start_keeper(self.registry, task_id, lock_file))

    def busy(self, task_id: str) -> bool:
        """Whether a caller is connected to the task's keeper (a command may run)."""
        return keeper_clients(self.registry.dir(task_id), task_id) > 0

    def end(self, task_id: str) -> None:
        end_keeper(self.registry.dir(task_id), task_id)


class OpenSessions:
    """The task sessions one call has open (while :func:`collecting`), so that another
    thread can cancel the call: closing them makes the keeper cancel their commands, while
    the task and everyone else's commands go on. A session opened after :meth:`close` is
    closed at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[AgentClient] = []
        self.closed = False

    def add(self, client: AgentClient) -> None:
        """Raises: StateError: the call was cancelled already (``client`` is closed)."""
        with self._lock:
            if not self.closed:
                self._clients.append(client)
                return
        client.close()
        raise StateError("the call was cancelled before its command started")

    def discard(self, client: AgentClient) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._clients.remove(client)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


_CURRENT: contextvars.ContextVar[OpenSessions | None] = contextvars.ContextVar(
    "pyro_task_sessions", default=None
)


@contextlib.contextmanager
def collecting(sessions: OpenSessions) -> Iterator[None]:
    """Sessions opened in this context (thread) while the block runs join ``sessions``."""
    token = _CURRENT.set(sessions)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> OpenSessions | None:
    return _CURRENT.get()


def _hello(sock: socket.socket) -> AgentClient:
    from pyro.guest.client import AgentClient

    return AgentClient.connect(sock, hello_timeout=HELLO_TIMEOUT_S)


def connect_keeper(task_dir: Path) -> socket.socket | None:
    """A connection to the task's live keeper, or None when there is none (a socket left by
    a killed keeper refuses; it is removed by the next :func:`start_keeper`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        with short_dir(task_dir) as short:
            sock.connect(f"{short}/{SOCK}")
    except (FileNotFoundError, ConnectionRefusedError, VMMError):  # VMMError: no folder
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def start_keeper(registry: VMRegistry, task_id: str, lock_file: Path) -> socket.socket:
    """Start the task's keeper (the caller holds the session lock, found none alive and the
    VM runs) and return a connection to it.

    Raises:
        StateError: the VM is not running.  BootError: its agent socket is not reachable.
    """
    task_dir = registry.dir(task_id)
    agent, pidfd = registry.agent_socket(task_id)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    dir_fd = os.open(task_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCK, dir_fd=dir_fd)
        # In the owner-only task folder; 0600 as well (not by umask: it is process-wide).
        listener.bind(f"/proc/self/fd/{dir_fd}/{SOCK}")
        os.chmod(SOCK, 0o600, dir_fd=dir_fd)
        listener.listen(64)
        fds = (agent.fileno(), listener.fileno(), pidfd, dir_fd)
        log = os.open(task_dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # Its own session: a Ctrl-C or kill of this process must not end other callers'
            # commands. It ends with the VMM (the pidfd) or when idle.
            proc = subprocess.Popen(
                [
                    sys.executable, "-I", "-S", str(KEEPER_SCRIPT), f"pyro-{task_id}",
                    *(str(fd) for fd in fds), SOCK, PIDFILE, str(lock_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=fds,
                close_fds=True,
                start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(log)
        # Reaped here when it ends while this process lives (the MCP server, the SDK).
        threading.Thread(target=proc.wait, name="pyro-keeper-reaper", daemon=True).start()
        paths.write_private(task_dir / PIDFILE, f"{proc.pid}\n")
    finally:
        agent.close()
        listener.close()
        os.close(pidfd)
        os.close(dir_fd)
    sock = connect_keeper(task_dir)
    if sock is None:
        raise StateError(f"the session keeper of task {task_id} did not start; see {LOG}")
    return sock


def keeper_pid(task_dir: Path, task_id: str) -> int | None:
    """The PID of the task's keeper when one runs (checked by its command line)."""
    try:
        text = (task_dir / PIDFILE).read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    try:
        with open(f"/proc/{text}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return None
    if str(KEEPER_SCRIPT).encode() in args and f"pyro-{task_id}".encode() in args:
        return int(text)
    return None


def keeper_clients(task_dir: Path, task_id: str) -> int:
    """How many callers the task's keeper serves now (0 when none runs): its sockets
    but the agent connection and the listening one."""
    pid = keeper_pid(task_dir, task_id)
    if pid is None:
        return 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    sockets = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return max(0, sockets - 2)


def end_keeper(task_dir: Path, task_id: str) -> None:
    """Kill the task's keeper if one runs (it ends with its VMM anyway; this is for a stop
    that leaves no doubt) and remove its files."""
    pid = keeper_pid(task_dir, task_id)
    if pid is not None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                if keeper_pid(task_dir, task_id) == pid:  # not reused meanwhile
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    select.select([fd], [], [], END_WAIT_S)  # readable once it has exited
            except OSError:
                pass
            finally:
                os.close(fd)
    for name in (SOCK, PIDFILE):
        with contextlib.suppress(OSError):
            (task_dir / name).unlink()
