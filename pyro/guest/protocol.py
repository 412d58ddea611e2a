"""Wire format of the guest agent protocol (docs/agent-protocol.md): frames and TLV payloads.

Pure: no sockets, no threads. The host trusts nothing the guest sends, so every decoder here
checks lengths before it slices and refuses what it does not know.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum

from pyro.errors import GuestError, LimitError, UsageError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<2sBBII")  # magic b"PY", version, type, request id, payload length
HEADER_LEN = HEADER.size
MAGIC = b"PY"
MAX_PAYLOAD = 1 << 20
CHUNK_LEN = 256 * 1024
HELLO_MAGIC = b"pyro-agent-hello"
_TLV = struct.Struct("<HI")
_INT = struct.Struct("<q")


class FrameType(IntEnum):
    """Frame types; host-to-guest below 0x80, guest-to-host from 0x81."""

    HELLO = 0x01
    EXEC = 0x02
    STDIN = 0x03
    SIGNAL = 0x04
    CANCEL = 0x05
    PUT = 0x06
    CHUNK = 0x07
    END = 0x08
    GET = 0x09
    STAT = 0x0A
    LIST = 0x0B
    SHUTDOWN = 0x0C
    MOUNT = 0x0D
    SPAWN = 0x0E
    WRITE = 0x0F
    READ = 0x10
    RESIZE = 0x11
    KILL = 0x12
    PROCS = 0x13
    REMOVE = 0x14
    PROBE = 0x15
    HELLO_OK = 0x81
    STDOUT = 0x82
    STDERR = 0x83
    EXIT = 0x84
    OK = 0x85
    ERROR = 0x86
    ENTRY = 0x87


GUEST_TYPES = frozenset(
    {
        FrameType.HELLO_OK,
        FrameType.STDOUT,
        FrameType.STDERR,
        FrameType.EXIT,
        FrameType.OK,
        FrameType.ERROR,
        FrameType.ENTRY,
        FrameType.CHUNK,
    }
)


class Tag(IntEnum):
    """TLV tags. Integers are 8-byte little-endian signed; strings are raw UTF-8 bytes."""

    MAGIC = 1
    VERSION = 2
    TIME_NS = 3
    SEED = 4
    HOSTNAME = 5
    AGENT_VERSION = 6
    KERNEL = 7
    READY_MS = 8
    UPTIME_MS = 9
    ARG = 10
    ENV = 11
    CWD = 12
    HAS_STDIN = 13
    TIMEOUT_MS = 14
    STDOUT_CAP = 15
    STDERR_CAP = 16
    SYNC = 17
    EXIT_CODE = 20
    SIGNAL = 21
    TIMED_OUT = 22
    STDOUT_TRUNC = 23
    STDERR_TRUNC = 24
    DURATION_US = 25
    PATH = 30
    MODE = 31
    SIZE = 32
    ERRNO = 33
    MESSAGE = 34
    NAME = 35
    KIND = 36
    MTIME_NS = 37
    UID = 38
    GID = 39
    LINK = 40
    SOURCE = 41
    FSTYPE = 42
    DATA = 43
    READ_ONLY = 44
    DIR = 45
    PTY = 50
    ROWS = 51
    COLS = 52
    CURSOR = 53
    MAX = 54
    WAIT_MS = 55
    FIRST = 56
    RUNNING = 57
    PID = 58
    EOF = 59
    END = 60
    RING = 61
    PORT = 62
    STATUS = 63


class ProtocolError(GuestError):
    """Raised when the guest sends bytes that break the agent protocol."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    type: FrameType
    request_id: int
    payload: bytes


def encode_frame(ftype: FrameType, request_id: int, payload: bytes = b"") -> bytes:
    """Header plus payload, ready to write.

    Raises:
        LimitError: the payload is larger than MAX_PAYLOAD (nothing is sent); callers check
            what they can name first (a guest path is at most PATH_MAX), this is the last
            line, so an oversized request is a clear error, never a crash.
    """
    if len(payload) > MAX_PAYLOAD:
        raise LimitError(
            f"a {ftype.name} request of {len(payload)} bytes is larger than the agent "
            f"protocol allows ({MAX_PAYLOAD} bytes); it was not sent",
            "send less at once: shorter paths, fewer arguments or a smaller environment",
        )
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, int(ftype), request_id, len(payload)) + payload


def decode_header(raw: bytes) -> tuple[FrameType, int, int]:
    """(type, request id, payload length) of a guest frame header.

    Raises:
        ProtocolError: bad magic or version, a type the guest may not send, or an oversized
            payload.
    """
    magic, version, ftype, request_id, length = HEADER.unpack(raw)
    if magic != MAGIC or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"guest agent sent a bad frame header {raw[:4]!r} "
            f"(expected {MAGIC!r} v{PROTOCOL_VERSION})"
        )
    if ftype not in GUEST_TYPES:
        raise ProtocolError(f"guest agent sent unknown frame type 0x{ftype:02x}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"guest agent sent a {length}-byte frame (limit {MAX_PAYLOAD})")
    return FrameType(ftype), request_id, length


# -- TLV payloads ----------------------------------------------------------------------------

TlvValue = bytes | str | int | bool


#: The integers a TLV carries (8-byte signed).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def encode_tlv(items: Iterable[tuple[Tag, TlvValue]]) -> bytes:
    """Concatenated TLVs; ints and bools as 8-byte signed, str as UTF-8.

    Raises:
        UsageError: an integer outside 8-byte signed (a caller's number that no check
            before caught: an error, never a crash).
    """
    parts: list[bytes] = []
    for tag, value in items:
        if isinstance(value, bool | int):
            if not INT_MIN <= value <= INT_MAX:
                raise UsageError(
                    f"{tag.name.lower()} {value} is out of range", f"give at most {INT_MAX}"
                )
            raw = _INT.pack(int(value))
        elif isinstance(value, str):
            raw = value.encode()
        else:
            raw = bytes(value)
        parts.append(_TLV.pack(int(tag), len(raw)))
        parts.append(raw)
    return b"".join(parts)


def iter_tlv(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """(tag, value) pairs in order; unknown tags are passed through for the caller to skip.

    Raises:
        ProtocolError: if a TLV runs past the end of the payload.
    """
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < _TLV.size:
            raise ProtocolError("guest agent sent a truncated TLV header")
        tag, length = _TLV.unpack_from(payload, pos)
        pos += _TLV.size
        if length > len(payload) - pos:
            raise ProtocolError("guest agent sent a TLV longer than its frame")
        yield tag, payload[pos : pos + length]
        pos += length


class Fields:
    """A decoded TLV payload with typed accessors (first value wins for single fields)."""

    def __init__(self, payload: bytes) -> None:
        self._items = list(iter_tlv(payload))

    def raw(self, tag: Tag) -> bytes | None:
        for t, value in self._items:
            if t == tag:
                return value
        return None

    def int(self, tag: Tag, default: int | None = None) -> int | None:
        value = self.raw(tag)
        if value is None:
            return default
        if len(value) != _INT.size:
            raise ProtocolError(f"guest agent sent a {len(value)}-byte integer for {tag.name}")
        result: int = _INT.unpack(value)[0]
        return result

    def str(self, tag: Tag, default: str = "") -> str:
        """Text to show (messages, versions): bytes that are not UTF-8 become U+FFFD.

        Never use it for a file name: two different names can decode to the same text.
        """
        value = self.raw(tag)
        return default if value is None else value.decode("utf-8", errors="replace")

    def name(self, tag: Tag, default: builtins.str = "") -> builtins.str:
        """A file name or link target, decoded without loss.

        Bytes that are not UTF-8 become lone surrogates (``surrogateescape``), so two
        different guest names never decode to the same ``str``. Such a name is not valid
        text: whatever turns it into a host name refuses it (``pyro.machines.copyout.check_name``),
        and :func:`shown_name` makes it printable.
        """
        value = self.raw(tag)
        return default if value is None else value.decode("utf-8", errors="surrogateescape")


def shown_name(name: str) -> str:
    """A name from :meth:`Fields.name` made printable (and JSON-safe): bad bytes as U+FFFD."""
    return name.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def hello_payload(*, time_ns: int, seed: bytes, hostname: str | None) -> bytes:
    items: list[tuple[Tag, TlvValue]] = [
        (Tag.MAGIC, HELLO_MAGIC),
        (Tag.VERSION, PROTOCOL_VERSION),
        (Tag.TIME_NS, time_ns),
        (Tag.SEED, seed),
    ]
    if hostname:
        items.append((Tag.HOSTNAME, hostname))
    return encode_tlv(items)
