"""The session keeper: one agent connection shared by every pyro process working on a task.

QEMU's agent chardev serves one host connection at a time and the agent resets its session
(killing running commands) on every HELLO, yet the protocol multiplexes any number of
requests on one connection. The keeper owns that one connection and serves a private unix
socket; every pyro process connects there and speaks the plain agent protocol, as if it
had the agent to itself:

- **HELLO.** The first client's HELLO goes to the agent as it is (it carries that client's
  clock and RNG seed; the agent's session starts there). Later clients' HELLOs are answered
  from the agent's HELLO_OK, with its UPTIME_MS moved on by the time since; they never reach
  the agent, so they reset nobody's commands. A client's frames before its HELLO are dropped,
  as the agent drops them.
- **Request ids** are remapped per client (every client numbers its own from 1) and mapped
  back on the replies. A request ends with the agent's EXIT, OK or ERROR for it; frames for
  ids nobody waits for (ended, cancelled, or made up by a hostile agent) are dropped.
- **Any frame type** passes both ways unchanged but for its id: the keeper only forwards, the
  client still validates everything the agent says.
- **A client that goes away** (end of file, a broken frame, kill -9) gets a CANCEL sent for
  each of its requests still open, as a dropped connection does for the agent: "hang up and
  your commands die" holds per client.
- **Memory** is bounded on every side (backpressure, not buffering): at most one frame plus
  ``MAX_PENDING`` bytes wait for a client; while a client is that far behind, the keeper
  stops reading the agent (whose own flow control then slows the commands); a client that
  stays behind for ``STALL_S`` is dropped as if it had gone away, so one stuck reader cannot
  stall the others for good. The clients' frames to the agent are bounded the same way.

**Lifetime.** The starting pyro process (:mod:`pyro.tasks.session`) hands over, as inherited
descriptors, the agent connection, the listening socket and a pidfd of the VMM: the keeper
ends with the VMM, whoever started it (it runs in its own session, so a kill -9 or Ctrl-C of
its starter leaves it alone). It also ends when it has had no client for ``LINGER_S`` and can
take the task's session lock without waiting (the lock its starters hold while they look for
a keeper and connect): it removes its socket and pid file, closes the agent connection, and
only then lets go of the lock, so the next caller starts a fresh keeper and a fresh HELLO.
When the agent's connection ends or the agent breaks the frame format, the keeper ends and
its clients see the connection drop.

Standard library only, started with ``python -I -S`` (fast, and independent of pyro being
importable, like :mod:`pyro.vmm.console`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import socket
import struct
import sys
import time

HEADER = struct.Struct("<2sBBII")
HEADER_LEN = HEADER.size
MAGIC = b"PY"
VERSION = 1
MAX_PAYLOAD = 1 << 20
HELLO = 0x01
CANCEL = 0x05
HELLO_OK = 0x81
EXEC = 0x02
#: Reply types that end a request (docs/agent-protocol.md): its id is free again after one.
ENDS = frozenset({0x84, 0x85, 0x86})
#: An EXEC ends only with EXIT or ERROR: its OK frames acknowledge stdin.
EXEC_ENDS = frozenset({0x84, 0x86})
TAG_UPTIME_MS = 9
_TLV = struct.Struct("<HI")
_INT = struct.Struct("<q")

CHUNK = 1 << 16
#: Bytes that may wait for one client (or for the agent) beyond the frame being added.
MAX_PENDING = 2 << 20
#: A client that keeps the keeper from reading the agent this long is dropped.
STALL_S = 60.0
#: Requests one client may have open at once (the agent allows 64 commands, 32 transfers).
MAX_OPEN = 1024
LINGER_S = 1.0
USAGE_EXIT = 2


def frame(ftype: int, request_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, VERSION, ftype, request_id, len(payload)) + payload


def split_frames(buf: bytearray) -> list[tuple[int, int, bytes]] | None:
    """Complete frames at the head of ``buf`` (consumed from it) as (type, id, payload);
    None when the bytes there are no frame (bad magic/version, oversized)."""
    out = []
    while len(buf) >= HEADER_LEN:
        magic, version, ftype, request_id, length = HEADER.unpack_from(buf)
        if magic != MAGIC or version != VERSION or length > MAX_PAYLOAD:
            return None
        if len(buf) < HEADER_LEN + length:
            break
        out.append((ftype, request_id, bytes(buf[HEADER_LEN : HEADER_LEN + length])))
        del buf[: HEADER_LEN + length]
    return out


def aged_hello_ok(payload: bytes, seconds: float) -> bytes:
    """HELLO_OK ``payload`` with its UPTIME_MS moved on by ``seconds`` (as it is, when it does
    not parse: the client validates it)."""
    parts = []
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < _TLV.size:
            return payload
        tag, length = _TLV.unpack_from(payload, pos)
        value = payload[pos + _TLV.size : pos + _TLV.size + length]
        if len(value) != length:
            return payload
        if tag == TAG_UPTIME_MS and length == _INT.size:
            value = _INT.pack(_INT.unpack(value)[0] + int(seconds * 1000))
        parts.append(_TLV.pack(tag, length) + value)
        pos += _TLV.size + length
    return b"".join(parts)


class Client:
    """One pyro process's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.ids: dict[int, int] = {}  # the client's request id -> the keeper's
        self.greeted = False
        self.waiting_hello = False
        self.behind_since: float | None = None


class Keeper:
    """The forwarding loop (see the module doc). ``idle_lock`` is an open descriptor of the
    task's session lock file, or None to live as long as the VMM."""

    def __init__(
        self,
        agent: socket.socket,
        listener: socket.socket,
        vmm: int | None,
        *,
        idle_lock: int | None = None,
        linger: float = LINGER_S,
        stall: float = STALL_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.agent = agent
        self.listener = listener
        self.vmm = vmm
        self.idle_lock = idle_lock
        self.linger = linger
        self.stall = stall
        self.max_pending = max_pending
        self.clients: dict[int, Client] = {}
        self.routes: dict[int, tuple[Client, int]] = {}  # the keeper's id -> client, its id
        self.execs: set[int] = set()  # the keeper's ids of open EXECs
        self.next_id = 0
        self.agent_in = bytearray()
        self.agent_out = bytearray()
        self.hello_sent = False
        self.hello_ok: bytes | None = None
        self.hello_at = 0.0
        self.idle_since = time.monotonic()
        self.dropped = 0  # agent frames for ids nobody waits for
        self.sel = selectors.DefaultSelector()
        for sock in (agent, listener):
            sock.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ)
        self.sel.register(agent, selectors.EVENT_READ)
        if vmm is not None:
            self.sel.register(vmm, selectors.EVENT_READ)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> str:
        """Serve until the VMM or the agent connection ends, or idle; returns why. The
        clients and the listener are closed then; the agent connection is the caller's."""
        try:
            return self._serve()
        finally:
            for client in list(self.clients.values()):
                client.sock.close()
            self.clients.clear()
            self.listener.close()

    def _serve(self) -> str:
        while True:
            self._interest()
            for key, events in self.sel.select(self._timeout()):
                if self.vmm is not None and key.fileobj == self.vmm:
                    return "the VMM exited"
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self.agent:
                    why = self._agent_io(events)
                    if why:
                        return why
                else:
                    client = self.clients.get(key.fd)
                    if client is not None:
                        self._client_io(client, events)
            self._drop_stalled()
            if self._idle_over():
                return "idle"

    def _interest(self) -> None:
        behind = any(len(c.outbuf) > self.max_pending for c in self.clients.values())
        events = 0 if behind else selectors.EVENT_READ
        if self.agent_out:
            events |= selectors.EVENT_WRITE
        self._set(self.agent, events)
        full = len(self.agent_out) > self.max_pending
        for client in self.clients.values():
            events = 0 if full else selectors.EVENT_READ
            if client.outbuf:
                events |= selectors.EVENT_WRITE
            self._set(client.sock, events)

    def _set(self, sock: socket.socket, events: int) -> None:
        try:
            key = self.sel.get_key(sock)
        except KeyError:
            if events:
                self.sel.register(sock, events)
            return
        if not events:
            self.sel.unregister(sock)
        elif key.events != events:
            self.sel.modify(sock, events)

    def _timeout(self) -> float:
        now = time.monotonic()
        waits = [
            self.stall - (now - c.behind_since) for c in self.clients.values() if c.behind_since
        ]
        if not self.clients and self.idle_lock is not None:
            waits.append(self.linger - (now - self.idle_since))
        return max(0.0, min(waits)) if waits else 5.0

    # -- clients ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                raise
            sock.setblocking(False)
            self.clients[sock.fileno()] = Client(sock)

    def _client_io(self, client: Client, events: int) -> None:
        if events & selectors.EVENT_WRITE and not self._flush(client.sock, client.outbuf):
            self._drop(client)
            return
        if len(client.outbuf) <= self.max_pending:
            client.behind_since = None
        if not events & selectors.EVENT_READ:
            return
        try:
            data = client.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        frames = split_frames(client.inbuf)
        if frames is None:  # not the protocol: the client is broken
            self._drop(client)
            return
        for ftype, cid, payload in frames:
            if not self._from_client(client, ftype, cid, payload):
                self._drop(client)
                return

    def _from_client(self, client: Client, ftype: int, cid: int, payload: bytes) -> bool:
        """Forward one client frame; False when the client must go."""
        if ftype == HELLO:
            self._cancel_all(client)  # a HELLO resets the client's session, as for the agent
            client.greeted = True
            if self.hello_ok is not None:
                self._answer_hello(client)
            else:
                client.waiting_hello = True
                if not self.hello_sent:
                    self.hello_sent = True
                    self.agent_out += frame(HELLO, 0, payload)
            return True
        if not client.greeted:
            return True
        kid = client.ids.get(cid)
        if kid is None:
            if ftype == CANCEL:
                return True  # nothing open under that id
            if len(client.ids) >= MAX_OPEN:
                return False
            kid = self._new_id()
            client.ids[cid] = kid
            self.routes[kid] = (client, cid)
            if ftype == EXEC:
                self.execs.add(kid)
        self.agent_out += frame(ftype, kid, payload)
        return True

    def _answer_hello(self, client: Client) -> None:
        assert self.hello_ok is not None
        payload = aged_hello_ok(self.hello_ok, time.monotonic() - self.hello_at)
        client.outbuf += frame(HELLO_OK, 0, payload)
        client.waiting_hello = False

    def _new_id(self) -> int:
        while True:
            self.next_id = self.next_id % 0xFFFFFFFF + 1
            if self.next_id not in self.routes:
                return self.next_id

    def _cancel_all(self, client: Client) -> None:
        for kid in client.ids.values():
            self.routes.pop(kid, None)
            self.execs.discard(kid)
            self.agent_out += frame(CANCEL, kid)
        client.ids.clear()

    def _drop(self, client: Client) -> None:
        """The client went away (or must): cancel what it left running, forget it."""
        self._cancel_all(client)
        self.clients.pop(client.sock.fileno(), None)
        try:  # noqa: SIM105 - contextlib costs start-up time (pyro.vmm.console)
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        if not self.clients:
            self.idle_since = time.monotonic()

    def _drop_stalled(self) -> None:
        now = time.monotonic()
        for client in list(self.clients.values()):
            if len(client.outbuf) > self.max_pending:
                if client.behind_since is None:
                    client.behind_since = now
                elif now - client.behind_since >= self.stall:
                    self._drop(client)

    # -- the agent ----------------------------------------------------------------------------

    def _agent_io(self, events: int) -> str | None:
        if events & selectors.EVENT_WRITE and not self._flush(self.agent, self.agent_out):
            return "lost the agent connection"
        if not events & selectors.EVENT_READ:
            return None
        try:
            data = self.agent.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            return "the agent closed the connection"
        self.agent_in += data
        frames = split_frames(self.agent_in)
        if frames is None:
            return "the agent broke the frame format"
        for ftype, kid, payload in frames:
            self._from_agent(ftype, kid, payload)
        return None

    def _from_agent(self, ftype: int, kid: int, payload: bytes) -> None:
        if ftype == HELLO_OK and kid == 0:
            if self.hello_ok is None:
                self.hello_ok = payload
                self.hello_at = time.monotonic()
                for client in self.clients.values():
                    if client.waiting_hello:
                        self._answer_hello(client)
            return
        route = self.routes.get(kid)
        if route is None:
            self.dropped += 1
            return
        client, cid = route
        client.outbuf += frame(ftype, cid, payload)
        if ftype in (EXEC_ENDS if kid in self.execs else ENDS):
            del self.routes[kid]
            self.execs.discard(kid)
            client.ids.pop(cid, None)

    @staticmethod
    def _flush(sock: socket.socket, buf: bytearray) -> bool:
        """Write what ``sock`` takes now; False when it is broken."""
        while buf:
            try:
                sent = sock.send(buf[:CHUNK])
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            del buf[:sent]
        return True

    # -- idle ---------------------------------------------------------------------------------

    def _idle_over(self) -> bool:
        """No client for the linger time and nobody (holding the lock) on the way in."""
        if self.clients or self.idle_lock is None:
            return False
        if time.monotonic() - self.idle_since < self.linger:
            return False
        try:
            fcntl.flock(self.idle_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        self._accept()  # a caller that connected before we took the lock is served
        if self.clients:
            fcntl.flock(self.idle_lock, fcntl.LOCK_UN)
            return False
        return True  # the lock stays held until main() has cleaned up and exits


def main(argv: list[str]) -> int:
    """``keeper.py pyro-VMID AGENT_FD LISTEN_FD VMM_PIDFD DIR_FD SOCK_NAME PID_NAME LOCK``.

    The descriptors are inherited; SOCK_NAME and PID_NAME are removed from DIR_FD at the
    end. 2 on bad arguments."""
    if len(argv) != 9 or not all(a.isdigit() for a in argv[2:6]):
        sys.stderr.write(
            "usage: keeper.py pyro-VMID AGENT_FD LISTEN_FD VMM_PIDFD DIR_FD SOCK PID LOCK\n"
        )
        return USAGE_EXIT
    agent_fd, listen_fd, vmm_fd, dir_fd = (int(a) for a in argv[2:6])
    sock_name, pid_name, lock_path = argv[6], argv[7], argv[8]
    agent = socket.socket(fileno=agent_fd)
    listener = socket.socket(fileno=listen_fd)
    try:
        idle_lock: int | None = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        idle_lock = None  # the task is going: live as long as its VMM
    keeper = Keeper(agent, listener, vmm_fd, idle_lock=idle_lock)
    try:
        why = keeper.run()
    except Exception as exc:  # never a traceback: the keeper's stderr is a log
        why = f"failed: {type(exc).__name__}: {exc}"
    _cleanup(dir_fd, sock_name, pid_name)
    agent.close()  # before the lock goes: the next keeper connects to the agent after it
    if why != "idle":
        sys.stderr.write(f"pyro session keeper {argv[1]}: {why}\n")
    return 0


def _cleanup(dir_fd: int, sock_name: str, pid_name: str) -> None:
    """Remove the socket and pid file, the pid file only while it names this process."""
    try:
        with open(os.open(pid_name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)) as f:
            mine = f.read().strip() == str(os.getpid())
    except OSError:
        mine = False
    if mine:
        for name in (sock_name, pid_name):
            try:  # noqa: SIM105
                os.unlink(name, dir_fd=dir_fd)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))
