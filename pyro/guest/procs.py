"""Host side of the agent's persistent processes (shells on a PTY, services on a pipe) and its
readiness probe; docs/agent-protocol.md, "Persistent processes".

The guest is not trusted: every reply is checked (names, counts, sizes, and that a cursor
never goes backwards or skips bytes without saying so) and a bad one is a ``ProtocolError``.
"""

from __future__ import annotations

import re
import signal as signal_mod
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyro.errors import UsageError
from pyro.guest.mux import Mux
from pyro.guest.protocol import (
    CHUNK_LEN,
    INT_MAX,
    Fields,
    Frame,
    FrameType,
    ProtocolError,
    Tag,
    TlvValue,
    encode_tlv,
)
from pyro.guest.results import GuestRequestError, unexpected

#: The agent's limits (agent.h ``PROC_*``), checked here before anything is sent.
PROC_MAX = 32
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
READ_MAX = 512 * 1024
WAIT_MAX_MS = 60_000
RING_MIN = 4096
RING_MAX = 16 << 20
WINSIZE_MAX = 1000
PROBE_MAX_MS = 2000
#: A path the agent's HTTP probe GETs: printable ASCII without spaces, at most 1 KiB.
HTTP_PATH_RE = re.compile(r"/[\x21-\x7e]{0,1023}")
#: The most input one WRITE frame carries (the host splits larger writes).
WRITE_CHUNK = 64 * 1024


def check_name(name: str, what: str = "name") -> str:
    """``name`` if the agent accepts it.

    Raises:
        UsageError: it does not match ``[a-z0-9][a-z0-9._-]{0,63}``.
    """
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"bad {what} {name[:80]!r}",
            "use 1-64 characters a-z 0-9 . _ -, starting with a letter or digit",
        )
    return name


def check_size(rows: int, cols: int) -> None:
    """Raises: UsageError: a window dimension outside 1..1000."""
    for label, value in (("rows", rows), ("columns", cols)):
        if not 1 <= value <= WINSIZE_MAX:
            raise UsageError(
                f"terminal {label} {value} is out of range", f"give 1-{WINSIZE_MAX} {label}"
            )


def check_signal(sig: int | str) -> int:
    """A signal number from a number or a name (``INT``, ``SIGTERM``).

    Raises:
        UsageError: unknown name or a number outside 1..64.
    """
    if isinstance(sig, str):
        upper = sig.upper()
        key = upper if upper.startswith("SIG") else f"SIG{upper}"
        if upper.isdigit():
            sig = int(upper)
        elif key in signal_mod.Signals.__members__:
            sig = int(signal_mod.Signals[key])
        else:
            raise UsageError(f"unknown signal {sig!r}", "give a name like INT or TERM, or 1-64")
    if not 1 <= sig <= 64:
        raise UsageError(f"signal {sig} is out of range", "give a signal number 1-64")
    return sig


@dataclass(frozen=True)
class ProcState:
    """A persistent process as the agent reports it."""

    name: str
    pid: int
    pty: bool
    running: bool
    exit_code: int | None
    signal: int | None
    #: Offset just past the newest output byte (bytes produced so far).
    end: int
    #: No more output will come (the process and everything holding its output ended).
    eof: bool


@dataclass(frozen=True)
class ProcOutput:
    """One read of a process's output from a cursor."""

    data: bytes
    #: The cursor to read from next.
    cursor: int
    #: The oldest offset the agent still holds.
    first: int
    #: Bytes between the cursor asked for and the first one returned that are gone for good
    #: (the ring overwrote them before they were read).
    missed: int
    state: ProcState


def _state(name: str, f: Fields) -> ProcState:
    pid = f.int(Tag.PID, 0) or 0
    end = f.int(Tag.END, -1)
    if pid <= 0 or end is None or end < 0:
        raise ProtocolError(f"guest agent reported process {name!r} with pid {pid}, end {end}")
    return ProcState(
        name=name,
        pid=pid,
        pty=bool(f.int(Tag.PTY, 0)),
        running=bool(f.int(Tag.RUNNING, 0)),
        exit_code=f.int(Tag.EXIT_CODE),
        signal=f.int(Tag.SIGNAL),
        end=end,
        eof=bool(f.int(Tag.EOF, 0)),
    )


def _request_error(frame: Frame, what: str) -> GuestRequestError:
    """Always with ``.errno`` (ENOENT here means "no such process", not a path)."""
    fields = Fields(frame.payload)
    err = fields.int(Tag.ERRNO, 0) or 0
    return GuestRequestError(f"cannot {what}: {fields.str(Tag.MESSAGE) or f'error {err}'}", err)


class ProcRequests:
    """The persistent-process requests of :class:`pyro.guest.client.AgentClient`."""

    _mux: Mux
    request_timeout: float

    def _ask(
        self, ftype: FrameType, fields: list[tuple[Tag, TlvValue]], what: str, wait_s: float = 0.0
    ) -> list[Frame]:
        req = self._mux.open()
        frames: list[Frame] = []
        try:
            self._mux.send(ftype, req.request_id, encode_tlv(fields))
            deadline = time.monotonic() + self.request_timeout + wait_s
            while True:
                frame = self._mux.next(req, deadline, what)
                if frame.type == FrameType.ERROR:
                    raise _request_error(frame, what)
                if frame.type == FrameType.OK:
                    frames.append(frame)
                    return frames
                if frame.type != FrameType.ENTRY or len(frames) >= PROC_MAX:
                    raise unexpected(frame, what)
                frames.append(frame)
        finally:
            self._mux.finish(req)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        pty: bool = False,
        rows: int = 24,
        cols: int = 80,
        ring_bytes: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> int:
        """Start a persistent process; returns its pid. ``pty``: on a new terminal (a shell),
        else stdout and stderr go to one pipe (a service) and stdin is /dev/null.
        ``uid``/``gid``: run as that user and group (default: the environment's, as EXEC).

        Raises:
            UsageError: bad name, empty argv, bad window or ring size.
            GuestRequestError: the agent refused (``.errno`` EEXIST: the name is taken;
                EAGAIN: too many processes).
        """
        check_name(name)
        check_size(rows, cols)
        if not argv:
            raise UsageError("cannot start an empty command", "give at least the program name")
        if ring_bytes is not None and not RING_MIN <= ring_bytes <= RING_MAX:
            raise UsageError(
                f"output ring of {ring_bytes} bytes is out of range",
                f"give {RING_MIN}-{RING_MAX} bytes",
            )
        fields: list[tuple[Tag, TlvValue]] = [(Tag.NAME, name)]
        fields += [(Tag.ARG, a) for a in argv]
        fields += [(Tag.ENV, f"{k}={v}") for k, v in (env or {}).items()]
        if cwd is not None:
            fields.append((Tag.CWD, cwd))
        fields += [(Tag.PTY, pty), (Tag.ROWS, rows), (Tag.COLS, cols)]
        if ring_bytes is not None:
            fields.append((Tag.RING, ring_bytes))
        if uid is not None:
            fields.append((Tag.UID, uid))
        if gid is not None:
            fields.append((Tag.GID, gid))
        if sum(len(str(v)) for _, v in fields) > CHUNK_LEN * 3:
            raise UsageError("command line and environment are too large")
        frame = self._ask(FrameType.SPAWN, fields, f"start {name}")[-1]
        pid = Fields(frame.payload).int(Tag.PID, 0) or 0
        if pid <= 0:
            raise ProtocolError(f"guest agent started {name} with pid {pid}")
        return pid

    def proc_write(self, name: str, data: bytes) -> None:
        """Send input to a process's terminal (in frames of WRITE_CHUNK bytes).

        Raises:
            GuestRequestError: no such process (ENOENT), no terminal (ENOTTY), ended
                (EPIPE), not reading its input (EAGAIN).
        """
        check_name(name)
        for start in range(0, max(len(data), 1), WRITE_CHUNK):
            chunk = data[start : start + WRITE_CHUNK]
            self._ask(FrameType.WRITE, [(Tag.NAME, name), (Tag.DATA, chunk)], f"write to {name}")

    def proc_read(
        self, name: str, cursor: int = 0, *, max_bytes: int = READ_MAX, wait_s: float = 0.0
    ) -> ProcOutput:
        """Output from ``cursor`` on; waits up to ``wait_s`` for some when there is none yet.

        Raises:
            UsageError: negative cursor, max_bytes or wait_s out of range.
            GuestRequestError: no such process (ENOENT), cursor past the end (EINVAL).
            ProtocolError: the reply breaks the cursor rules.
        """
        check_name(name)
        wait_ms = int(wait_s * 1000)
        if (
            not 0 <= cursor <= INT_MAX
            or not 1 <= max_bytes <= READ_MAX
            or not 0 <= wait_ms <= WAIT_MAX_MS
        ):
            raise UsageError(
                f"bad read of {name}: cursor {cursor}, max {max_bytes}, wait {wait_s:g} s",
                f"cursor 0-{INT_MAX}, max 1-{READ_MAX} bytes, wait 0-{WAIT_MAX_MS // 1000} s",
            )
        fields: list[tuple[Tag, TlvValue]] = [
            (Tag.NAME, name),
            (Tag.CURSOR, cursor),
            (Tag.MAX, max_bytes),
            (Tag.WAIT_MS, wait_ms),
        ]
        frame = self._ask(FrameType.READ, fields, f"read the output of {name}", wait_s)[-1]
        f = Fields(frame.payload)
        data = f.raw(Tag.DATA) or b""
        nxt = f.int(Tag.CURSOR, -1)
        first = f.int(Tag.FIRST, -1)
        state = _state(name, f)
        assert nxt is not None and first is not None
        start = nxt - len(data)
        bad = (
            len(data) > max_bytes
            or first < 0
            or start < cursor  # the cursor went backwards
            or (start > cursor and start != first)  # bytes skipped without being gone
            or start < first
            or nxt > state.end
        )
        if bad:
            raise ProtocolError(
                f"guest agent answered a read of {name} at {cursor} with {len(data)} bytes, "
                f"next {nxt}, first {first}, end {state.end}"
            )
        return ProcOutput(data=data, cursor=nxt, first=first, missed=start - cursor, state=state)

    def proc_resize(self, name: str, rows: int, cols: int) -> None:
        """Set a terminal's window size (its foreground program gets SIGWINCH).

        Raises:
            UsageError: size out of range.  GuestRequestError: no such process or no PTY.
        """
        check_name(name)
        check_size(rows, cols)
        fields: list[tuple[Tag, TlvValue]] = [(Tag.NAME, name), (Tag.ROWS, rows), (Tag.COLS, cols)]
        self._ask(FrameType.RESIZE, fields, f"resize the terminal of {name}")

    def proc_signal(self, name: str, sig: int) -> None:
        """Signal a process: a terminal's foreground process group, else its own group.

        Raises:
            UsageError: bad signal.  GuestRequestError: no such process (ENOENT), ended (ESRCH).
        """
        check_name(name)
        sig = check_signal(sig)
        self._ask(FrameType.KILL, [(Tag.NAME, name), (Tag.SIGNAL, sig)], f"signal {name}")

    def proc_list(self) -> list[ProcState]:
        """Every persistent process, running or ended (until removed), by name."""
        frames = self._ask(FrameType.PROCS, [], "list the persistent processes")
        states = []
        for frame in frames[:-1]:
            f = Fields(frame.payload)
            name = f.str(Tag.NAME)
            if not NAME_RE.fullmatch(name):
                raise ProtocolError(f"guest agent listed a process with a bad name {name!r}")
            states.append(_state(name, f))
        if len({s.name for s in states}) != len(states):
            raise ProtocolError("guest agent listed a process name twice")
        return sorted(states, key=lambda s: s.name)

    def proc_remove(self, name: str) -> None:
        """Kill a process's group (SIGKILL) if it runs and forget it and its output.

        Raises:
            GuestRequestError: no such process (ENOENT).
        """
        check_name(name)
        self._ask(FrameType.REMOVE, [(Tag.NAME, name)], f"remove {name}")

    def probe(self, port: int, http_path: str | None = None, *, timeout_s: float = 1.0) -> int:
        """Connect to 127.0.0.1:port in the guest; with ``http_path`` GET it. Returns the
        HTTP status (0 for a bare TCP probe).

        Raises:
            UsageError: bad port, path or timeout.
            GuestRequestError: nothing answers (``.errno`` ECONNREFUSED, ETIMEDOUT, EPROTO).
        """
        timeout_ms = int(timeout_s * 1000)
        if not 1 <= port <= 65535 or not 1 <= timeout_ms <= PROBE_MAX_MS:
            raise UsageError(f"bad probe of port {port}", "give a port 1-65535")
        fields: list[tuple[Tag, TlvValue]] = [(Tag.PORT, port), (Tag.TIMEOUT_MS, timeout_ms)]
        if http_path is not None:
            if not HTTP_PATH_RE.fullmatch(http_path):
                raise UsageError(
                    f"bad HTTP path {http_path[:80]!r}",
                    "give a path that starts with / and has no spaces, like /health",
                )
            fields.append((Tag.PATH, http_path))
        frame = self._ask(FrameType.PROBE, fields, f"probe port {port}", timeout_s)[-1]
        status = Fields(frame.payload).int(Tag.STATUS, 0) or 0
        if http_path is not None and not 100 <= status <= 999:
            raise ProtocolError(f"guest agent reported HTTP status {status}")
        return status


__all__ = ["ProcOutput", "ProcRequests", "ProcState", "check_name"]
