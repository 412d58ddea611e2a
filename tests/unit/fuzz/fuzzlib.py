"""Strategies and checks shared by the fuzz tests and ``soak/run.py`` (which runs big counts).

Each ``check_*`` function takes one generated example and raises AssertionError (or lets a
foreign exception escape) when pyro misbehaves: a traceback-worthy exception, a hang, an
error without a location. The unit tests run them a few hundred times; the soak thousands.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from pyro.errors import PyroError, SpecError
from pyro.guest.protocol import (
    HEADER,
    MAGIC,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    FrameType,
    Tag,
    encode_tlv,
)
from pyro.spec.load import load_spec_data, load_spec_text

# -- spec documents ----------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["debian:12", "oci://127.0.0.1:1/x:1", "{{ vars.X }}", "{% for %}", "../x"]),
)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "apiVersion", "kind", "metadata", "name", "spec", "environment", "resources",
            "vcpus", "memoryMiB", "timeoutSeconds", "network", "policy", "allow", "publish",
            "env", "files", "source", "target", "steps", "run", "argv", "cwd",
            "continueOnError", "artifacts", "cleanup", "kernel", "rootfs", "defaults",
            "version", "sizeMiB", "packages", "host", "guest",
        ]
    ),
    st.text(max_size=8),
)  # fmt: skip
_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=25,
)


@st.composite
def spec_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document that looks like a Run/Environment spec, with random parts anywhere."""
    doc: dict[str, Any] = {
        "apiVersion": draw(st.sampled_from(["pyro/v1", "pyro/v2", 1, None])),
        "kind": draw(st.sampled_from(["Run", "Environment", "run", "Job", None])),
        "metadata": draw(st.one_of(st.fixed_dictionaries({"name": _SCALARS}), _VALUES)),
        "spec": draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"environment": _SCALARS},
                    optional={
                        "steps": st.lists(st.dictionaries(_KEYS, _VALUES, max_size=4), max_size=3),
                        "resources": st.dictionaries(_KEYS, _SCALARS, max_size=3),
                        "network": _VALUES,
                        "files": _VALUES,
                        "artifacts": _VALUES,
                        "timeoutSeconds": _SCALARS,
                        "cleanup": _SCALARS,
                        "env": _VALUES,
                    },
                ),
                _VALUES,
            )
        ),
    }
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=2)):
        doc.pop(key, None)
    doc.update(draw(st.dictionaries(_KEYS, _VALUES, max_size=2)))
    return doc


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError, OverflowError):
        return repr(doc)


spec_texts: st.SearchStrategy[str] = st.one_of(
    spec_documents().map(_dump),
    st.text(max_size=300),
    st.lists(
        st.sampled_from(
            [
                "apiVersion: pyro/v1\n",
                "kind: Run\n",
                "metadata: {name: x}\n",
                "spec:\n",
                "  environment: debian:12\n",
                "  steps:\n",
                "    - run: true\n",
                "    - argv: [a, b]\n",
                "  timeoutSeconds: {{ vars.T }}\n",
                "---\n",
                "&a [*a]\n",
                "!!python/object:os.system ls\n",
                "{% raw %}",
                "\t",
                ": :",
                "key: [unclosed\n",
                "\x00",
                "\ufeff",
                "x: !!binary AAAA\n",
                "{{ ''.__class__ }}\n",
                "{{ range(10**9) | list }}\n",
            ]
        ),
        max_size=12,
    ).map("".join),
)


def check_spec_text(text: str, base_dir: Path) -> None:
    """Loading text either works or raises SpecError whose issues all say where."""
    try:
        load_spec_text(text, name="fuzz.yaml", base_dir=base_dir, vars={"T": "5", "X": "x"})
    except SpecError as exc:
        _check_spec_error(exc)


def check_spec_data(doc: dict[str, Any], base_dir: Path) -> None:
    """Same for the dict path (SDK/MCP payloads), with and without templating."""
    for vars in (None, {"X": "x"}):
        try:
            load_spec_data(doc, name="payload", base_dir=base_dir, vars=vars)
        except SpecError as exc:
            _check_spec_error(exc)


def _check_spec_error(exc: SpecError) -> None:
    assert exc.issues, f"SpecError without issues: {exc}"
    for issue in exc.issues:
        assert issue.message
        assert issue.pointer == "" or issue.pointer.startswith("/"), issue.pointer
        assert issue.render().startswith(issue.location)
    assert exc.hint


# -- agent protocol frames from a hostile guest --------------------------------------------

_GUEST_TYPES = [int(t) for t in FrameType if t >= 0x81] + [0x00, 0x01, 0x7F, 0xFF]


def _frame(ftype: int, request_id: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, ftype, request_id, size) + payload


@st.composite
def _tlv_payload(draw: st.DrawFn) -> bytes:
    items = draw(
        st.lists(
            st.tuples(
                st.sampled_from([int(t) for t in Tag] + [0, 999]),
                st.one_of(
                    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(
                        lambda i: struct.pack("<q", i)
                    ),
                    st.binary(max_size=40),
                ),
            ),
            max_size=6,
        )
    )
    raw = b"".join(struct.pack("<HI", tag, len(value)) + value for tag, value in items)
    if draw(st.booleans()):
        return raw
    cut = draw(st.integers(min_value=0, max_value=len(raw)))
    return raw[:cut] + draw(st.binary(max_size=8))


@st.composite
def _hostile_piece(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["frame", "frame", "frame", "oversized", "lying", "garbage"]))
    ftype = draw(st.sampled_from(_GUEST_TYPES))
    request_id = draw(st.sampled_from([0, 1, 2, 0xFFFFFFFF]))
    if kind == "frame":
        return _frame(ftype, request_id, draw(_tlv_payload()))
    if kind == "oversized":  # announces more than the host may ever buffer
        length = draw(st.sampled_from([MAX_PAYLOAD + 1, 0x7FFFFFFF, 0xFFFFFFFF]))
        return _frame(ftype, request_id, b"x" * 16, length)
    if kind == "lying":  # announces more than it sends (the stream then ends)
        return _frame(ftype, request_id, b"y" * 8, draw(st.integers(9, MAX_PAYLOAD)))
    return draw(st.binary(min_size=1, max_size=64))


HELLO_OK = _frame(
    FrameType.HELLO_OK, 0, encode_tlv([(Tag.VERSION, PROTOCOL_VERSION), (Tag.KERNEL, "fuzz")])
)

#: (hello first?, pieces, operation, drip bytes slowly?)
hostile_sessions = st.tuples(
    st.booleans(),
    st.lists(_hostile_piece(), max_size=8),
    st.sampled_from(["stat", "list", "get", "exec"]),
    st.booleans(),
)

#: A call that takes longer than this is a hang (each I/O step is bounded far below it).
HANG_LIMIT_S = 20.0


def check_hostile_guest(session: tuple[bool, list[bytes], str, bool]) -> None:
    """Drive AgentClient against a fake guest on a socketpair sending ``session``'s bytes.

    The host must end with a result or a PyroError, within HANG_LIMIT_S, and never buffer
    more than the protocol's limits allow.
    """
    hello_first, pieces, operation, slow = session
    data = (HELLO_OK if hello_first else b"") + b"".join(pieces)
    host, guest = socket.socketpair()
    guest_thread = threading.Thread(target=_fake_guest, args=(guest, data, slow), daemon=True)
    guest_thread.start()
    outcome: list[BaseException | str] = []
    worker = threading.Thread(target=_drive_host, args=(host, operation, outcome), daemon=True)
    worker.start()
    worker.join(HANG_LIMIT_S)
    hung = worker.is_alive()
    guest.close() if hung else None
    worker.join(5)
    guest_thread.join(5)
    assert not hung, f"host hung on {operation} against {data[:200]!r}"
    assert outcome, "host driver ended without an outcome"
    result = outcome[0]
    if isinstance(result, BaseException):
        raise AssertionError(f"{operation}: {type(result).__name__}: {result}") from result


def _fake_guest(sock: socket.socket, data: bytes, slow: bool) -> None:
    try:
        sock.settimeout(5)
        sock.recv(65536)  # the host's HELLO
        if slow:
            for i in range(0, len(data), 7):
                sock.sendall(data[i : i + 7])
                time.sleep(0.001)
        else:
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # drain whatever the host sends until it closes
            pass
    except OSError:
        pass
    finally:
        sock.close()


def _drive_host(sock: socket.socket, operation: str, outcome: list[BaseException | str]) -> None:
    from pyro.guest.client import AgentClient

    try:
        client = AgentClient.connect(sock, hello_timeout=3, request_timeout=3)
    except PyroError:
        outcome.append("refused hello")
        return
    except BaseException as exc:
        outcome.append(exc)
        return
    try:
        with client:
            calls: dict[str, Callable[[], object]] = {
                "stat": lambda: client.stat("/x"),
                "list": lambda: client.list_dir("/x"),
                "get": lambda: client.get_file("/x", io.BytesIO(), max_bytes=1 << 20),
                "exec": lambda: client.exec(["x"], timeout_s=0.1),
            }
            calls[operation]()
        outcome.append("ok")
    except PyroError:
        outcome.append("pyro error")
    except BaseException as exc:
        outcome.append(exc)


# -- CLI argv ----------------------------------------------------------------------------

#: Commands that never boot, build or pull (the fuzz must not start real work).
SAFE_COMMANDS = [
    ["validate"], ["plan"], ["env", "list"], ["env", "inspect"], ["vm", "list"],
    ["vm", "status"], ["vm", "logs"], ["vm", "delete"], ["vm", "stop"], ["task", "list"],
    ["task", "status"], ["task", "logs"], ["task", "delete"], ["env", "prune"], ["schema"], [],
]  # fmt: skip
_TOKENS = st.one_of(
    st.sampled_from(
        [
            "--json", "--help", "-h", "--var", "K=V", "=", "--vars-file", "--", "--version",
            "--timeout-seconds", "-1", "0", "99999999999999999999", "--memory-mib", "nan",
            "--network", "bogus", "x.yaml", "/dev/null", "/", "../../etc/passwd",
            "--no-such-flag", "debian:12", "oci://", "deadbeef", "--profile", "-", "é",
        ]
    ),
    # No NUL: an OS argv cannot carry one (click's Path type would raise ValueError on it).
    st.text(max_size=12).filter(lambda s: "\x00" not in s),
)  # fmt: skip
cli_argvs = st.tuples(st.sampled_from(SAFE_COMMANDS), st.lists(_TOKENS, max_size=6)).map(
    lambda pair: [*pair[0], *pair[1]]
)


def check_cli_argv(argv: list[str]) -> None:
    """Run ``pyro ARGV`` in-process: exit 0/1/2 only, never a traceback or crash log.

    The caller points $PYRO_STATE_DIR/$PYRO_CACHE_DIR at throwaway folders.
    """
    from click.testing import CliRunner

    from pyro.cli.main import cli

    crash_dir = Path(os.environ.get("PYRO_STATE_DIR", "/nonexistent")) / "logs"
    crashes_before = set(crash_dir.glob("crash-*"))
    result = CliRunner().invoke(cli, argv, catch_exceptions=True)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    assert unexpected is None, f"pyro {argv!r} raised {unexpected!r}"
    assert result.exit_code in (0, 1, 2), f"pyro {argv!r} exited {result.exit_code}: {text}"
    assert "Traceback" not in text, f"pyro {argv!r} printed a traceback: {text}"
    assert set(crash_dir.glob("crash-*")) == crashes_before, f"pyro {argv!r} wrote a crash log"
