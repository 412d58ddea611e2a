"""Guest text on a terminal (issue #17 item 10): escape sequences and controls are removed
when the stream is a TTY; pipes, files and ``--json`` keep the bytes."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyro.machines.registry import VMRegistry

pytestmark = pytest.mark.hostile

ROOT = Path(__file__).parents[3]
HANG_GUARD_S = 120

#: What a hostile guest writes to its serial console: a title change, a screen clear, a
#: cursor move over earlier text, a hyperlink, colours, a DCS string, 8-bit CSI, controls,
#: a carriage return over a line, a bidi override and an unterminated OSC at the end.
HOSTILE = (
    "boot ok\n"
    "\x1b]0;owned title\x07\x1b[2J\x1b[H\x1b[1A\x1b[2K"
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ "
    "\x1b[31mred\x1b[0m \x1bP1$r0m\x1b\\dcs \x9b6n"
    "bell\x07 nul\x00 back\x08space del\x7f vt\x0b ff\x0c c1\x85\n"
    "safe line\rrewritten\n"
    "tab\there \u202eevil\u202c done\n"
    "last \x1b]2;never ends"
)


def test_for_terminal_keeps_text_and_removes_sequences_and_controls() -> None:
    from pyro.cli.terminal import for_terminal

    assert for_terminal(HOSTILE) == (
        "boot ok\n"
        "click red dcs "
        "bell nul backspace del vt ff c1\n"
        "safe line\nrewritten\n"
        "tab\there evil done\n"
        "last "
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain ünïcödé 漢字 🙂\n\ttab", "plain ünïcödé 漢字 🙂\n\ttab"),
        ("a\r\nb\r\n", "a\nb\n"),
        ("\x1b", ""),
        ("\x1b\x1b[31mx", "x"),
        ("\x1b(Bx\x1b7y\x1b8", "xy"),
        ("\x1b[?1049h\x1b[38;2;1;2;3mx", "x"),
        ("\x1b[31\nx", "\nx"),  # broken CSI: the sequence ends, the newline stays
        ("\x1b]" + "x" * 5000 + "tail", "x" * (5000 - 4097) + "tail"),
        ("\x1b]52;c;ZXZpbA==\x07after", "after"),
        ("\x9d0;t\x9cafter", "after"),
    ],
    ids=[
        "unicode",
        "crlf",
        "lone-esc",
        "double-esc",
        "charset-and-save",
        "private-mode-and-truecolor",
        "broken-csi",
        "unterminated-osc",
        "clipboard-osc",
        "8-bit-osc",
    ],
)
def test_for_terminal_cases(text: str, expected: str) -> None:
    from pyro.cli.terminal import for_terminal

    assert for_terminal(text) == expected


def test_streamed_text_is_cleaned_the_same_however_it_is_split() -> None:
    from pyro.cli.terminal import TerminalFilter, for_terminal

    whole = for_terminal(HOSTILE)
    for size in (1, 2, 3, 7):
        cleaner = TerminalFilter()
        pieces = [HOSTILE[i : i + size] for i in range(0, len(HOSTILE), size)]
        assert "".join(cleaner.feed(piece) for piece in pieces) == whole


class _Stream(io.TextIOWrapper):
    def __init__(self, tty: bool) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def written(self) -> bytes:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue()


def test_byte_writer_cleans_for_a_tty_and_keeps_bytes_otherwise() -> None:
    from pyro.cli.terminal import byte_writer

    data = "é\x1b[2Jok 🙂\n".encode() + b"\xff\x1b]0;t\x07end"
    tty, pipe = _Stream(True), _Stream(False)
    write_tty, write_pipe = byte_writer(tty), byte_writer(pipe)
    for index in range(len(data)):  # one byte at a time: split characters and sequences
        write_tty(data[index : index + 1])
        write_pipe(data[index : index + 1])
    assert tty.written() == "éok 🙂\n\ufffdend".encode()
    assert pipe.written() == data


# -- the real CLI on a pseudo-terminal -------------------------------------------------


def _env(state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYRO_STATE_DIR": str(state),
        "PYRO_CACHE_DIR": str(state.parent / "cache"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
        "TERM": "xterm",
    }


def _in_pty(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the pyro CLI with stdin, stdout and stderr on a new pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + HANG_GUARD_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(timeout=HANG_GUARD_S), bytes(output)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def hostile_vm(tmp_path: Path) -> tuple[Path, str]:
    """A VM record whose serial console log holds what a hostile guest printed."""
    state = tmp_path / "state"
    registry = VMRegistry(state)
    record = registry.create(
        environment="debian:12",
        environment_digest="sha256:0",
        kernel=tmp_path / "k",
        initrd=tmp_path / "i",
        rootfs=tmp_path / "r",
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=128,
    )
    registry.serial_log_path(record.id).write_bytes(HOSTILE.encode())
    return state, record.id


def test_vm_logs_on_a_terminal_shows_the_text_without_sequences(
    hostile_vm: tuple[Path, str],
) -> None:
    state, vm_id = hostile_vm
    code, output = _in_pty(["vm", "logs", vm_id], _env(state))
    assert code == 0, output
    text = output.decode("utf-8")
    # The terminal itself turns each "\n" into "\r\n"; no other control may arrive.
    assert [c for c in text.replace("\r\n", "\n") if c < " " and c not in "\n\t"] == []
    assert not any("\x7f" <= c <= "\x9f" or c in "\u202e\u202c" for c in text)
    assert "owned title" not in text and "evil.example" not in text and "never ends" not in text
    assert "boot ok\r\nclick red dcs bell nul backspace" in text
    assert "safe linerewritten\r\n" in text  # logs_vm drops carriage returns itself


def test_vm_logs_to_a_pipe_and_as_json_keep_the_bytes(hostile_vm: tuple[Path, str]) -> None:
    state, vm_id = hostile_vm
    env = _env(state)
    command = [sys.executable, "-m", "pyro.cli", "vm", "logs", vm_id]
    piped = subprocess.run(command, env=env, capture_output=True, timeout=HANG_GUARD_S)
    assert piped.returncode == 0
    # As before (click.echo drops its own CSI colour codes on a pipe; the rest stays).
    assert b"\x1b]0;owned title\x07" in piped.stdout and b"nul\x00 back\x08" in piped.stdout
    as_json = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, timeout=HANG_GUARD_S
    )
    assert json.loads(as_json.stdout)["serial"] == HOSTILE.replace("\r", "")
