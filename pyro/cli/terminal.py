"""Text from a guest (or a registry, or a spec) made safe to show on a terminal.

A guest controls what its commands print, its serial console, its file names and its
error texts. Written to a terminal as they are, escape sequences in them can set the
window title, rewrite or clear what is on screen, hide text, remap keys on some terminals,
or answer back into the terminal's input. So when a stream is a TTY, everything
guest-controlled that pyro prints goes through :func:`for_terminal` (whole texts) or
:class:`TerminalFilter` (streamed output) first.

What is kept: printable text (any script), newlines and tabs. What is removed:

- every escape sequence, whole: CSI (``ESC [`` … final byte; also the 8-bit ``U+009B``),
  OSC/DCS/SOS/PM/APC strings up to their terminator (BEL or ST), and two- or
  three-character ``ESC`` sequences. Colours (SGR, ``ESC [ … m``) go too: they can hide
  text (concealed, black on black), and telling harmless sequences from harmful ones is
  exactly what this module does not want to get wrong;
- every other C0 control (NUL, BEL, backspace, vertical tab, form feed, …), DEL and the
  C1 controls ``U+0080`` to ``U+009F``;
- the bidirectional embedding, override and isolate controls (``U+202A`` to ``U+202E``,
  ``U+2066`` to ``U+2069``), which reorder how a line is displayed.

A carriage return becomes a newline (``\\r\\n`` one newline), so a line cannot be
overwritten from its start; progress bars print one line per update.

Not a TTY (a pipe, a file) and ``--json`` keep the bytes exactly; so does the SDK.
"""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "BinaryOut",
    "TerminalFilter",
    "byte_writer",
    "echo",
    "for_terminal",
    "is_tty",
    "strip_sequences",
    "write_text",
]

_NORMAL, _ESC, _ESC_INTERMEDIATE, _CSI, _STRING, _STRING_ESC = range(6)

#: Characters that start something to remove (or, with keep_controls, to look at).
_SPECIAL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CSI_BODY = re.compile("[\x20-\x3f]*")
_STRING_END = re.compile("[\x07\x1b\x9c]")
_STRING_STARTERS = "]PX^_"
_C1_STRING_STARTERS = "\x90\x98\x9d\x9e\x9f"
#: An OSC/DCS/... string without a terminator stops being swallowed after this much text,
#: so a guest cannot hide everything it prints afterwards behind one unterminated ``ESC ]``.
MAX_STRING_CHARS = 4096


class TerminalFilter:
    """Removes escape sequences and controls from text that arrives in pieces.

    A sequence split across two pieces is still removed whole: the state between pieces is
    kept. With ``keep_controls`` only escape sequences go (the JUnit writer uses that and
    escapes the remaining characters itself); carriage returns are then kept too.
    """

    def __init__(self, *, keep_controls: bool = False) -> None:
        self.keep_controls = keep_controls
        self._state = _NORMAL
        self._after_cr = False
        self._swallowed = 0

    def feed(self, text: str) -> str:
        out: list[str] = []
        index, end = 0, len(text)
        while index < end:
            state = self._state
            if state == _NORMAL:
                if self._after_cr:
                    self._after_cr = False
                    if text[index] == "\n":
                        index += 1
                        continue
                match = _SPECIAL.search(text, index)
                if match is None:
                    out.append(text[index:])
                    break
                out.append(text[index : match.start()])
                index = match.end()
                self._control(match.group(), out)
            elif state in (_ESC, _ESC_INTERMEDIATE):
                char = text[index]
                if state == _ESC and char == "[":
                    self._state = _CSI
                elif state == _ESC and char in _STRING_STARTERS:
                    self._enter_string()
                elif "\x20" <= char <= "\x2f":
                    self._state = _ESC_INTERMEDIATE
                elif "\x30" <= char <= "\x7e":
                    self._state = _NORMAL
                else:
                    self._state = _NORMAL  # not a sequence after all: look at char again
                    continue
                index += 1
            elif state == _CSI:
                index = _CSI_BODY.match(text, index).end()  # type: ignore[union-attr]
                if index < end:
                    self._state = _NORMAL
                    if "\x40" <= text[index] <= "\x7e":
                        index += 1
            elif state == _STRING:
                room = MAX_STRING_CHARS - self._swallowed
                match = _STRING_END.search(text, index, index + room + 1)
                stop = min(end, index + room + 1) if match is None else match.start()
                self._swallowed += stop - index
                index = stop
                if match is not None:
                    index += 1
                    self._state = _STRING_ESC if match.group() == "\x1b" else _NORMAL
                elif self._swallowed > MAX_STRING_CHARS:
                    self._state = _NORMAL  # unterminated: what follows is shown again
            else:  # _STRING_ESC: ESC \ ends the string; ESC anything else starts anew
                if text[index] == "\\":
                    self._state = _NORMAL
                    index += 1
                else:
                    self._state = _ESC
        return "".join(out)

    def _control(self, char: str, out: list[str]) -> None:
        if char == "\x1b":
            self._state = _ESC
        elif char == "\x9b":
            self._state = _CSI
        elif char in _C1_STRING_STARTERS:
            self._enter_string()
        elif self.keep_controls:
            out.append(char)
        elif char == "\r":
            out.append("\n")
            self._after_cr = True
        # Anything else (NUL, BEL, backspace, DEL, C1, bidi controls) is dropped.

    def _enter_string(self) -> None:
        self._state = _STRING
        self._swallowed = 0


def for_terminal(text: str) -> str:
    """``text`` without escape sequences or control characters (``\\n``/``\\t`` stay)."""
    if not _SPECIAL.search(text):
        return text
    return TerminalFilter().feed(text)


def strip_sequences(text: str) -> str:
    """``text`` without escape sequences; other characters, controls included, stay."""
    if not _SPECIAL.search(text):
        return text
    return TerminalFilter(keep_controls=True).feed(text)


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def echo(text: str, *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` for text that may hold guest-controlled parts: cleaned on a TTY."""
    import click

    stream = sys.stderr if err else sys.stdout
    click.echo(for_terminal(text) if is_tty(stream) else text, err=err, nl=nl)


def byte_writer(stream: TextIO) -> Callable[[bytes], None]:
    """A writer for streamed guest output: bytes as they are, or cleaned when ``stream`` is a
    TTY (decoded as UTF-8, invalid bytes shown as U+FFFD, a character or sequence split
    across chunks handled whole)."""
    binary = stream.buffer
    if not is_tty(stream):

        def write(data: bytes) -> None:
            binary.write(data)
            binary.flush()

        return write
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    cleaner = TerminalFilter()
    encoding = getattr(stream, "encoding", None) or "utf-8"

    def write_clean(data: bytes) -> None:
        text = cleaner.feed(decoder.decode(data))
        if text:
            binary.write(text.encode(encoding, "replace"))
            binary.flush()

    return write_clean


def write_text(text: str, *, err: bool = False) -> None:
    """Write ``text`` as it is (no newline added) to stdout or stderr; cleaned on a TTY."""
    stream = sys.stderr if err else sys.stdout
    stream.write(for_terminal(text) if is_tty(stream) else text)
    stream.flush()


class BinaryOut:
    """A binary file-like view of stdout for guest bytes: cleaned when stdout is a TTY."""

    def __init__(self, stream: TextIO) -> None:
        self._write = byte_writer(stream)

    def write(self, data: bytes) -> int:
        self._write(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Every write is flushed already."""
