"""The C agent and the host speak the same wire: every constant of pyro/guest/agent/agent.h
(frame types, TLV tags, version, header length, limits, the hello magic), the frame magic
the agent writes, and where the host finds the agent, against pyro.guest.protocol and the
VMM backends.

The header is read as text (its ``#define``s and ``enum``s), not compiled, so this runs on a
host without a C compiler.
"""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path
from typing import Any

import pytest

from pyro.guest import protocol
from pyro.guest.protocol import GUEST_TYPES, FrameType, Tag
from pyro.vmm.firecracker import AGENT_VSOCK_PORT
from pyro.vmm.qemu import AGENT_PORT_NAME

AGENT = Path(protocol.__file__).resolve().parent / "agent"

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE = re.compile(r"^[ \t]*#define[ \t]+(\w+)[ \t]+(.+?)[ \t]*$", re.MULTILINE)
_ENUM = re.compile(r"\benum[ \t]+(\w+)[ \t]*\{(.*?)\}", re.DOTALL)
_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")
_OPERATORS: dict[type, Any] = {
    ast.LShift: operator.lshift,
    ast.Mult: operator.mul,
    ast.Add: operator.add,
    ast.Sub: operator.sub,
}


def c_value(text: str) -> int | str:
    """A C constant expression of integers (suffixes, hex, ``<<``, ``*``, ``+``, ``-``,
    parentheses) or a string literal.

    Raises:
        ValueError: for anything else.
    """
    node = ast.parse(_SUFFIX.sub(r"\1", text.strip()), mode="eval").body

    def value(node: ast.expr) -> int | str:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | str):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if isinstance(left, int) and isinstance(right, int):
                return int(_OPERATORS[type(node.op)](left, right))
        raise ValueError(f"not a constant: {text!r}")

    return value(node)


def read_header(text: str) -> tuple[dict[str, int | str], dict[str, dict[str, int]]]:
    """(``#define`` name → value, enum name → {member → value}) of a C header; defines that
    are not constants (``_GNU_SOURCE``, include guards) are left out."""
    text = _COMMENT.sub("", text)
    defines: dict[str, int | str] = {}
    for name, raw in _DEFINE.findall(text):
        try:
            defines[name] = c_value(raw)
        except (SyntaxError, ValueError):
            continue
    enums: dict[str, dict[str, int]] = {}
    for name, body in _ENUM.findall(text):
        members: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in body.split(","))):
            member, _, raw = item.partition("=")
            found = c_value(raw)
            assert isinstance(found, int), f"enum {name}: {item!r} has no integer value"
            members[member.strip()] = found
        enums[name] = members
    return defines, enums


def frame_magic(wire_c: str) -> bytes:
    """The two magic bytes the agent writes at the start of every frame header (wire.c)."""
    match = re.search(r"hdr\[HDR_LEN\]\s*=\s*\{\s*'(.)',\s*'(.)'", wire_c)
    assert match, "wire.c no longer builds its header as {'P', 'Y', ...}"
    return (match.group(1) + match.group(2)).encode()


def differences(header: str) -> list[str]:
    """Every wire constant on which ``header`` (agent.h's text) and pyro.guest.protocol
    disagree, one line each."""
    defines, enums = read_header(header)
    found: list[str] = []

    def same(what: str, c_side: object, python_side: object) -> None:
        if c_side != python_side:
            found.append(f"{what}: agent.h {c_side!r}, protocol.py {python_side!r}")

    same("frame types", enums.get("frame_type"), {f"T_{t.name}": t.value for t in FrameType})
    same("TLV tags", enums.get("tag"), {f"G_{t.name}": t.value for t in Tag})
    same("PROTO_VERSION", defines.get("PROTO_VERSION"), protocol.PROTOCOL_VERSION)
    same("HDR_LEN", defines.get("HDR_LEN"), protocol.HEADER_LEN)
    same("MAX_PAYLOAD", defines.get("MAX_PAYLOAD"), protocol.MAX_PAYLOAD)
    same("CHUNK_LEN", defines.get("CHUNK_LEN"), protocol.CHUNK_LEN)
    same("HELLO_MAGIC", defines.get("HELLO_MAGIC"), protocol.HELLO_MAGIC.decode())
    return found


def test_the_header_reader_reads_defines_and_enums() -> None:
    defines, enums = read_header(
        '#define A (1u << 20) /* a comment */\n#define B "x"\n#define _GNU_SOURCE\n'
        "enum e {\n\tX = 0x0a, // ten\n\tY = 2,\n};\n"
    )
    assert defines == {"A": 1 << 20, "B": "x"}
    assert enums == {"e": {"X": 10, "Y": 2}}
    with pytest.raises(ValueError):
        c_value("sizeof(int)")


def test_agent_header_and_protocol_module_agree() -> None:
    assert differences((AGENT / "agent.h").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("T_EXIT = 0x84", "T_EXIT = 0x88"), "frame types"),
        (("\tG_LINK = 40,\n", "\tG_LINK = 40,\n\tG_NEW = 41,\n"), "TLV tags"),
        (("#define PROTO_VERSION 1", "#define PROTO_VERSION 2"), "PROTO_VERSION"),
        (("(1u << 20)", "(1u << 21)"), "MAX_PAYLOAD"),
        (("(256u * 1024u)", "(128u * 1024u)"), "CHUNK_LEN"),
        (('"pyro-agent-hello"', '"pyro-agent-hi"'), "HELLO_MAGIC"),
    ],
)
def test_a_changed_header_is_a_difference(change: tuple[str, str], named: str) -> None:
    text = (AGENT / "agent.h").read_text(encoding="utf-8")
    assert change[0] in text
    (found,) = differences(text.replace(*change))
    assert found.startswith(named)


def test_frame_magic_and_directions_agree() -> None:
    assert frame_magic((AGENT / "wire.c").read_text(encoding="utf-8")) == protocol.MAGIC
    # Types from 0x81 are the guest's; CHUNK goes both ways (GET data comes back in it).
    replies = {t for t in FrameType if t >= 0x80}
    assert replies | {FrameType.CHUNK} == GUEST_TYPES


def test_the_host_looks_for_the_agent_where_it_listens() -> None:
    defines, _ = read_header((AGENT / "boot.c").read_text(encoding="utf-8"))
    assert defines["VSOCK_PORT"] == AGENT_VSOCK_PORT  # Firecracker: vsock
    assert defines["PORT_NAME"] == AGENT_PORT_NAME  # QEMU: virtio-serial port
