"""What agent requests return (AgentInfo, ExecResult, GuestStat) and how guest errors map."""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass

from pyro.errors import GuestError, GuestPathError
from pyro.guest.protocol import Fields, Frame, ProtocolError, Tag

_PATH_ERRNOS = {
    errno_mod.ENOENT,
    errno_mod.ENOTDIR,
    errno_mod.EISDIR,
    errno_mod.EINVAL,
    errno_mod.EACCES,
    errno_mod.EPERM,
    errno_mod.ENAMETOOLONG,
    errno_mod.ELOOP,
}
_KINDS = {
    "f": "file",
    "d": "dir",
    "l": "symlink",
    "c": "char",
    "b": "block",
    "p": "fifo",
    "s": "socket",
}


@dataclass(frozen=True)
class AgentInfo:
    """What the agent said about itself in its hello."""

    agent_version: str
    protocol_version: int
    kernel: str
    boot_ms: int  # guest uptime (since kernel start) when the agent was ready to serve
    uptime_ms: int  # guest uptime when it answered the hello


@dataclass(frozen=True)
class ExecResult:
    """How a command ended, with its (capped) output."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: float


@dataclass(frozen=True)
class GuestStat:
    """One guest path's metadata (lstat: symlinks are not followed).

    ``name`` and ``link_target`` are decoded without loss (:meth:`Fields.name`): a name that
    is not UTF-8 keeps its bad bytes as lone surrogates; show it with ``shown_name``.
    """

    name: str
    kind: str  # one letter: f(ile) d(ir) l(symlink) c(har) b(lock) p (fifo) s(ocket) ?
    mode: int  # permission bits
    size: int
    mtime_ns: int
    uid: int
    gid: int
    link_target: str | None

    @property
    def type(self) -> str:
        """The kind spelled out: file, dir, symlink, char, block, fifo, socket or other."""
        return _KINDS.get(self.kind, "other")


class GuestRequestError(GuestError):
    """Raised when the agent refuses a request for a reason other than the path; has .errno."""

    def __init__(self, summary: str, errno: int, hint: str | None = None) -> None:
        super().__init__(summary, hint)
        self.errno = errno


def guest_error(frame: Frame, what: str) -> GuestError:
    """The pyro error for an ERROR frame (path problems become GuestPathError)."""
    fields = Fields(frame.payload)
    err = fields.int(Tag.ERRNO, 0) or 0
    message = fields.str(Tag.MESSAGE) or f"error {err}"
    if err in _PATH_ERRNOS:
        return GuestPathError(f"{what}: {message}")
    return GuestRequestError(f"{what}: {message}", err)


def unexpected(frame: Frame, what: str) -> ProtocolError:
    return ProtocolError(f"guest agent answered {what} with an unexpected {frame.type.name} frame")


def to_stat(frame: Frame) -> GuestStat:
    """GuestStat from the stat TLVs of an OK or ENTRY frame."""
    f = Fields(frame.payload)
    link = f.raw(Tag.LINK)
    return GuestStat(
        name=f.name(Tag.NAME),
        kind=kind if (kind := f.str(Tag.KIND, "?")) in _KINDS else "?",
        mode=f.int(Tag.MODE, 0) or 0,
        size=f.int(Tag.SIZE, 0) or 0,
        mtime_ns=f.int(Tag.MTIME_NS, 0) or 0,
        uid=f.int(Tag.UID, 0) or 0,
        gid=f.int(Tag.GID, 0) or 0,
        link_target=None if link is None else link.decode("utf-8", errors="surrogateescape"),
    )
