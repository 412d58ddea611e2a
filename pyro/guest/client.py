"""Host side of the guest agent protocol: hello, exec, file transfer, stat/list, shutdown.

The socket handed in is an already-connected byte stream to the agent (QEMU's virtio-serial
chardev socket, or Firecracker's vsock socket after its CONNECT handshake). Calls are
thread-safe: a reader thread (pyro.guest.mux) routes frames, so several calls may be in flight.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pyro.errors import GuestError, GuestPathError, LimitError, RunTimeoutError
from pyro.guest.mux import Mux, Request, read_frame
from pyro.guest.procs import ProcRequests
from pyro.guest.protocol import (
    CHUNK_LEN,
    PROTOCOL_VERSION,
    Fields,
    Frame,
    FrameType,
    ProtocolError,
    Tag,
    TlvValue,
    encode_frame,
    encode_tlv,
    hello_payload,
)
from pyro.guest.results import (
    AgentInfo,
    ExecResult,
    GuestRequestError,
    GuestStat,
    guest_error,
    to_stat,
    unexpected,
)
from pyro.guest.stdin import StdinFeeder, StdinSource, acknowledges

__all__ = ["AgentClient", "AgentInfo", "ExecResult", "GuestRequestError", "GuestStat"]

DEFAULT_REQUEST_TIMEOUT = 60.0
# How long past its own timeout a command may take to be reported (kill + drain under TCG).
EXEC_GRACE_S = 15.0
MAX_LIST_ENTRIES = 100_000


#: Linux PATH_MAX: the longest guest path (with its final NUL) the guest can open.
GUEST_PATH_MAX = 4096


def _check_guest_path(path: str) -> None:
    if not path.startswith("/") or "\0" in path:
        raise GuestPathError(f"guest path {path!r} must be absolute and contain no NUL bytes")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size >= GUEST_PATH_MAX:
        raise GuestPathError(
            f"guest path {path[:60]!r}... is {size} bytes long; a guest path is at most "
            f"{GUEST_PATH_MAX - 1} bytes (PATH_MAX)",
            "use a shorter path (a guest agent that listed it is broken or hostile)",
        )


class AgentClient(ProcRequests):
    """A connected, hello'ed guest agent. Use as a context manager or call close().

    Persistent processes (shells, services) are its :class:`ProcRequests` methods.
    """

    def __init__(self, mux: Mux, info: AgentInfo, request_timeout: float) -> None:
        self._mux = mux
        self.info = info
        self.request_timeout = request_timeout

    @classmethod
    def connect(
        cls,
        sock: socket.socket,
        *,
        hello_timeout: float,
        now: float | None = None,
        hostname: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> AgentClient:
        """Say hello (setting the guest's clock, RNG seed and hostname) and start serving.

        ``now`` is the wall-clock time (epoch seconds) to give the guest, default the host's;
        ``hostname`` is set in the guest if given; ``request_timeout`` bounds every non-exec
        request and every frame send. The client owns ``sock`` from here on (closed on failure).

        Raises:
            RunTimeoutError: if no hello answer arrives within hello_timeout seconds.
            GuestError: if the connection breaks or the agent speaks another protocol.
        """
        payload = hello_payload(
            time_ns=int((time.time() if now is None else now) * 1e9),
            seed=os.urandom(64),
            hostname=hostname,
        )
        deadline = time.monotonic() + hello_timeout
        try:
            sock.settimeout(hello_timeout)
            sock.sendall(encode_frame(FrameType.HELLO, 0, payload))
            while True:  # the deadline bounds the whole hello, not each frame or byte
                frame = read_frame(sock, deadline=deadline)
                if frame.type == FrameType.HELLO_OK:
                    break
        except TimeoutError as exc:
            sock.close()
            raise RunTimeoutError(
                f"guest agent did not answer the hello within {hello_timeout:g} s",
                "the guest may still be booting or failed to boot; check its serial log",
            ) from exc
        except (EOFError, OSError, GuestError) as exc:
            sock.close()
            if isinstance(exc, GuestError):
                raise
            raise GuestError(f"guest agent connection failed during hello: {exc}") from exc
        try:
            fields = Fields(frame.payload)
            info = AgentInfo(
                agent_version=fields.str(Tag.AGENT_VERSION, "unknown"),
                protocol_version=fields.int(Tag.VERSION, 0) or 0,
                kernel=fields.str(Tag.KERNEL, "unknown"),
                boot_ms=fields.int(Tag.READY_MS, 0) or 0,
                uptime_ms=fields.int(Tag.UPTIME_MS, 0) or 0,
            )
        except GuestError:
            sock.close()
            raise
        if info.protocol_version != PROTOCOL_VERSION:
            sock.close()
            raise GuestError(
                f"guest agent speaks protocol v{info.protocol_version}, pyro speaks "
                f"v{PROTOCOL_VERSION}",
                "rebuild the agent initramfs with this pyro version",
            )
        return cls(Mux(sock, io_timeout=request_timeout), info, request_timeout)

    # -- exec -------------------------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: StdinSource | None = None,
        timeout_s: float | None = None,
        stdout_cap: int = 1 << 20,
        stderr_cap: int = 1 << 20,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        sync: bool = False,
        uid: int | None = None,
        gid: int | None = None,
    ) -> ExecResult:
        """Run argv in the guest (its own session; a timeout kills the whole process group).

        ``uid``/``gid``: run as that user and group (default: the environment's, see
        docs/agent-protocol.md; root unless it was made from an image with a ``User``).

        Output beyond the caps is dropped and flagged truncated; callbacks see each chunk kept.
        ``stdin`` (bytes, or a binary file read in chunks) is streamed while the command
        runs (:mod:`pyro.guest.stdin`); without it the command's stdin is ``/dev/null``.
        ``sync``: the guest flushes its file systems before it reports the end, so what the
        command wrote survives a later hard stop of the VM.

        Raises:
            GuestError: if the agent refuses the request or the connection breaks.
            RunTimeoutError: if the agent does not report the end well after timeout_s.
            StdinReadError: ``stdin`` could not be read (the command was cancelled).
        """
        if not argv:
            raise GuestError("cannot run an empty command", "give at least the program name")
        items: list[tuple[Tag, TlvValue]] = [(Tag.ARG, a) for a in argv]
        items += [(Tag.ENV, f"{k}={v}") for k, v in (env or {}).items()]
        if cwd is not None:
            items.append((Tag.CWD, cwd))
        if timeout_s is not None:
            items.append((Tag.TIMEOUT_MS, max(1, int(timeout_s * 1000))))
        items += [
            (Tag.HAS_STDIN, stdin is not None),
            (Tag.STDOUT_CAP, stdout_cap),
            (Tag.STDERR_CAP, stderr_cap),
        ]
        if sync:
            items.append((Tag.SYNC, True))
        if uid is not None:
            items.append((Tag.UID, uid))
        if gid is not None:
            items.append((Tag.GID, gid))
        payload = encode_tlv(items)
        if len(payload) > CHUNK_LEN * 3:
            raise LimitError(f"command line and environment are too large ({len(payload)} bytes)")
        caps = {FrameType.STDOUT: stdout_cap, FrameType.STDERR: stderr_cap}
        req = self._mux.open(caps)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s + EXEC_GRACE_S
        feeder = None
        if stdin is not None:
            windowed = acknowledges(self.info.agent_version)
            feeder = StdinFeeder(self._mux, req.request_id, stdin, windowed=windowed)
        try:
            self._mux.send(FrameType.EXEC, req.request_id, payload)
            if feeder is not None:
                feeder.start()
            result = self._collect(req, deadline, on_stdout, on_stderr, feeder)
            if feeder is not None and feeder.error is not None:
                raise feeder.error
            return result
        except BaseException:
            # Interrupted or timed out on our side: stop the command rather than orphan it.
            if self._mux.broken is None:
                with contextlib.suppress(GuestError):
                    self._mux.send(FrameType.CANCEL, req.request_id)
            raise
        finally:
            if feeder is not None:
                feeder.stop()
            self._mux.finish(req)

    def _collect(
        self,
        req: Request,
        deadline: float | None,
        on_stdout: Callable[[bytes], None] | None,
        on_stderr: Callable[[bytes], None] | None,
        feeder: StdinFeeder | None = None,
    ) -> ExecResult:
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            frame = self._mux.next(req, deadline, "a command")
            if frame.type == FrameType.STDOUT:
                out.append(frame.payload)
                if on_stdout:
                    on_stdout(frame.payload)
            elif frame.type == FrameType.STDERR:
                err.append(frame.payload)
                if on_stderr:
                    on_stderr(frame.payload)
            elif frame.type == FrameType.EXIT:
                f = Fields(frame.payload)
                return ExecResult(
                    exit_code=f.int(Tag.EXIT_CODE),
                    signal=f.int(Tag.SIGNAL),
                    timed_out=bool(f.int(Tag.TIMED_OUT, 0)),
                    stdout=b"".join(out),
                    stderr=b"".join(err),
                    stdout_truncated=bool(f.int(Tag.STDOUT_TRUNC, 0))
                    or FrameType.STDOUT in req.trimmed,
                    stderr_truncated=bool(f.int(Tag.STDERR_TRUNC, 0))
                    or FrameType.STDERR in req.trimmed,
                    duration_s=(f.int(Tag.DURATION_US, 0) or 0) / 1e6,
                )
            elif frame.type == FrameType.OK and feeder is not None:
                feeder.ack(frame)  # the command took stdin (pyro.guest.stdin)
            elif frame.type == FrameType.ERROR:
                raise guest_error(frame, "cannot run the command")
            else:
                raise unexpected(frame, "a command")

    # -- files ------------------------------------------------------------------------------

    def put_file(self, guest_path: str, src: BinaryIO | Path, *, mode: int = 0o644) -> int:
        """Write src to guest_path atomically (temp file + rename; parents are created).

        Returns the number of bytes written.

        Raises:
            GuestPathError: if the guest path is not absolute or cannot be written there.
            GuestError: if the agent fails otherwise or the connection breaks.
            RunTimeoutError: if the agent stops answering.
        """
        _check_guest_path(guest_path)
        if isinstance(src, Path):
            try:
                with src.open("rb") as fh:
                    return self.put_file(guest_path, fh, mode=mode)
            except OSError as exc:
                raise GuestPathError(f"cannot read {src}: {exc.strerror}") from exc
        req = self._mux.open()
        what = f"writing {guest_path}"
        sent = 0
        try:
            payload = encode_tlv([(Tag.PATH, guest_path), (Tag.MODE, mode & 0o7777)])
            self._mux.send(FrameType.PUT, req.request_id, payload)
            while not req.frames:  # stop sending early once the agent refused
                chunk = src.read(CHUNK_LEN)
                if not chunk:
                    break
                self._mux.send(FrameType.CHUNK, req.request_id, chunk)
                sent += len(chunk)
            self._mux.send(FrameType.END, req.request_id)
            frame = self._mux.next(req, self._deadline(), what)
            if frame.type == FrameType.ERROR:
                raise guest_error(frame, f"cannot write {guest_path} in the guest")
            if frame.type != FrameType.OK:
                raise unexpected(frame, what)
            size = Fields(frame.payload).int(Tag.SIZE, -1)
            if size != sent:
                raise ProtocolError(f"guest agent wrote {size} bytes of {sent} to {guest_path}")
            return sent
        finally:
            self._mux.finish(req)

    def get_file(self, guest_path: str, dst: BinaryIO, *, max_bytes: int | None = None) -> int:
        """Copy guest_path into dst; returns the number of bytes copied.

        Raises:
            GuestPathError: if the guest path is not absolute, missing or not a file.
            LimitError: if the file is larger than max_bytes (dst then holds a prefix).
            GuestError: if the agent fails otherwise or the connection breaks.
            RunTimeoutError: if the agent stops sending.
        """
        _check_guest_path(guest_path)
        req = self._mux.open()
        what = f"reading {guest_path}"
        got = 0
        try:
            self._mux.send(FrameType.GET, req.request_id, encode_tlv([(Tag.PATH, guest_path)]))
            while True:
                frame = self._mux.next(req, self._deadline(), what)
                if frame.type == FrameType.CHUNK:
                    if max_bytes is not None and got + len(frame.payload) > max_bytes:
                        self._mux.send(FrameType.CANCEL, req.request_id)
                        raise LimitError(
                            f"guest file {guest_path} is larger than {max_bytes} bytes",
                            "raise the size limit or copy a smaller file",
                        )
                    dst.write(frame.payload)
                    got += len(frame.payload)
                elif frame.type == FrameType.OK:
                    size = Fields(frame.payload).int(Tag.SIZE, -1)
                    if size != got:
                        raise ProtocolError(f"guest agent sent {got} of {size} bytes")
                    return got
                elif frame.type == FrameType.ERROR:
                    raise guest_error(frame, f"cannot read {guest_path} in the guest")
                else:
                    raise unexpected(frame, what)
        finally:
            self._mux.finish(req)

    def stat(self, guest_path: str) -> GuestStat:
        """lstat() of a guest path.

        Raises:
            GuestPathError: if the path is not absolute or does not exist.
            GuestError: if the agent fails otherwise or the connection breaks.
        """
        _check_guest_path(guest_path)
        frames = self._simple(FrameType.STAT, guest_path, f"stat of {guest_path}", 0)
        return to_stat(frames[-1])

    def list_dir(self, guest_path: str) -> list[GuestStat]:
        """The entries of a guest directory (without . and ..), sorted by name.

        Raises:
            GuestPathError: if the path is not absolute, missing or not a directory.
            LimitError: if it has more than MAX_LIST_ENTRIES entries.
            GuestError: if the agent fails otherwise or the connection breaks.
        """
        _check_guest_path(guest_path)
        what = f"listing of {guest_path}"
        frames = self._simple(FrameType.LIST, guest_path, what, MAX_LIST_ENTRIES)
        return sorted((to_stat(f) for f in frames[:-1]), key=lambda s: s.name)

    def mount(
        self,
        source: str,
        target: str,
        fstype: str,
        *,
        data: str = "",
        read_only: bool = False,
        dirs: tuple[str, ...] = (),
    ) -> None:
        """Mount in the guest: make ``dirs`` and ``target`` (``mkdir -p``, 0755), then
        mount ``source`` (a device, ``serial:NAME`` for the virtio disk of that serial, or
        ``overlay``) on ``target``. ``noatime`` always.

        Raises:
            GuestPathError: a path is not absolute.
            GuestRequestError: the guest could not (``.errno``; ENOSYS from an older agent).
            GuestError: the connection breaks.
        """
        _check_guest_path(target)
        for folder in dirs:
            _check_guest_path(folder)
        fields: list[tuple[Tag, TlvValue]] = [
            (Tag.PATH, target),
            (Tag.SOURCE, source),
            (Tag.FSTYPE, fstype),
            (Tag.READ_ONLY, int(read_only)),
        ]
        if data:
            fields.append((Tag.DATA, data))
        fields += [(Tag.DIR, folder) for folder in dirs]
        what = f"mount on {target}"
        req = self._mux.open()
        try:
            self._mux.send(FrameType.MOUNT, req.request_id, encode_tlv(fields))
            frame = self._mux.next(req, self._deadline(), what)
            if frame.type == FrameType.ERROR:
                raise guest_error(frame, f"cannot {what}")
            if frame.type != FrameType.OK:
                raise unexpected(frame, what)
        finally:
            self._mux.finish(req)

    def _simple(self, ftype: FrameType, path: str, what: str, max_entries: int) -> list[Frame]:
        req = self._mux.open()
        frames: list[Frame] = []
        try:
            self._mux.send(ftype, req.request_id, encode_tlv([(Tag.PATH, path)]))
            while True:
                frame = self._mux.next(req, self._deadline(), what)
                if frame.type == FrameType.ERROR:
                    raise guest_error(frame, f"cannot get the {what}")
                if frame.type not in (FrameType.ENTRY, FrameType.OK):
                    raise unexpected(frame, what)
                if frame.type == FrameType.ENTRY and len(frames) >= max_entries:
                    raise LimitError(f"{what} has more than {max_entries} entries")
                frames.append(frame)
                if frame.type == FrameType.OK:
                    return frames
        finally:
            self._mux.finish(req)

    # -- lifecycle --------------------------------------------------------------------------

    def shutdown(self, *, timeout_s: float = 5.0) -> None:
        """Ask the guest to sync and power off (the VM ends), then close the connection.

        Losing the connection after the request went out counts as success.

        Raises:
            RunTimeoutError: if the agent does not acknowledge within timeout_s.
            GuestError: if the connection was already broken.
        """
        req = self._mux.open()
        try:
            self._mux.send(FrameType.SHUTDOWN, req.request_id)
            try:
                frame = self._mux.next(req, time.monotonic() + timeout_s, "the shutdown")
            except RunTimeoutError:
                raise
            except GuestError:
                return  # the guest went down before its acknowledgement got out: as asked
            if frame.type not in (FrameType.OK, FrameType.ERROR):
                raise unexpected(frame, "the shutdown")
        finally:
            self._mux.finish(req)
            self.close()

    def close(self) -> None:
        """Close the connection (idempotent). Commands still running in the guest are killed."""
        self._mux.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _deadline(self) -> float:
        return time.monotonic() + self.request_timeout
