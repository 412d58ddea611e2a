"""How a failure is reported by both faces: exit code, error document, and a bug's crash log.

The CLI (:mod:`pyro.cli.errors`) and the MCP server (:mod:`pyro.mcp.calls`) each show a
failure their own way (stderr lines or ``--json``; a tool error), but what they show is
decided here, once: :func:`describe` maps an exception to a :class:`Failure` (its exit
code and its error document ``{"type", "message", "hint", ...}``). An exception that is
neither a :class:`~pyro.errors.PyroError` nor an interrupt is a bug: its traceback goes
to an owner-only crash log under ``$PYRO_STATE_DIR/logs`` with secrets taken out, and the
user is told where it is, never shown the traceback.

Exit codes (the table in docs/public-contract.md):

====  =====================================================================================
0     success
1     a :class:`~pyro.errors.PyroError`
2     a usage error (click's, or :class:`pyro.errors.UsageError`)
3     a bug (the crash log)
125   any of those three, from a command that passes a guest's exit code through
      (``run``, ``apply``, ``demo``, ``vm exec``, ``task exec``), as docker does: its
      guest owns 0-123 (and 124 timeout, 126 not executable, 127 not found)
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro.errors import PyroError, UsageError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 3
#: pyro could not run the guest command (a pass-through command's own failure). Beside it,
#: from the guest: 124 timeout (pyro.machines.exec), 126 not executable, 127 not found
#: (the guest agent's exec).
EXIT_CANNOT_RUN = 125
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Failure:
    """What a face tells its user about one failure."""

    exit_code: int
    #: ``{"type", "message", "hint", ...}``: the ``error`` of a ``--json`` document and of
    #: an MCP tool error (a PyroError's :meth:`~pyro.errors.PyroError.to_dict`).
    document: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.document["type"])

    @property
    def message(self) -> str:
        return str(self.document["message"])

    @property
    def hint(self) -> str | None:
        hint = self.document.get("hint")
        return None if hint is None else str(hint)

    def text(self) -> str:
        """The two lines a person reads: ``error: MESSAGE`` and ``hint: HINT``."""
        return f"error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")


def describe(exc: Exception, *, passthrough: bool = False) -> Failure:
    """How ``exc`` is reported: a :class:`~pyro.errors.PyroError` exits 1 (a
    :class:`~pyro.errors.UsageError` 2); anything else is a bug (3), whose traceback is
    written to a crash log first. With ``passthrough`` (a command whose exit code is its
    guest's), each of those exits :data:`EXIT_CANNOT_RUN` instead. (Interrupts are the
    CLI's alone: 130, no document.)
    """
    if isinstance(exc, PyroError):
        code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
        return Failure(EXIT_CANNOT_RUN if passthrough else code, exc.to_dict())
    try:
        where = f"the traceback is in {write_crash_log(exc)}"
    except OSError as log_error:
        where = f"the crash log could not be written ({log_error.strerror or log_error})"
    document = {
        "type": "InternalError",
        "message": f"internal error: {type(exc).__name__}: {exc}",
        "hint": f"this is a bug in pyro; {where} (please attach it to a bug report)",
    }
    return Failure(EXIT_CANNOT_RUN if passthrough else EXIT_BUG, document)


# --- the crash log ----------------------------------------------------------------------

#: Options whose value is, or may hold, a secret (``K=V`` pairs, secret values).
SECRET_OPTIONS = frozenset({"--env", "-e", "--secret", "--secret-file", "--var"})
REDACTED = "[REDACTED]"
_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.DOTALL)
#: Secret values shorter than this are not hunted for in the traceback (too many false hits).
_MIN_HUNTED = 4


def redact_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` fit for a crash log, and the values that were taken out.

    Out go: the value of every option in :data:`SECRET_OPTIONS` (``--env K=V`` and
    ``--env=K=V`` keep ``K``), the value of every ``KEY=VALUE`` word, every word with
    whitespace in it (a shell snippet), and the whole guest command after ``--``.
    """
    out: list[str] = []
    removed: list[str] = []

    def pair(word: str) -> str:
        match = _PAIR.match(word)
        if match:
            removed.append(match.group(2))
            return f"{match.group(1)}={REDACTED}"
        removed.append(word)
        return REDACTED

    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if index == 1:
            out.append(word)  # the program
        elif word == "--":
            rest = words[index:]
            removed.extend(rest)
            out.append(word)
            out.extend(REDACTED for _ in rest)
            break
        elif word in SECRET_OPTIONS:
            out.append(word)
            if index < len(words):
                out.append(pair(words[index]))
                index += 1
        elif word.startswith("--") and word.split("=", 1)[0] in SECRET_OPTIONS and "=" in word:
            name, value = word.split("=", 1)
            out.append(f"{name}={pair(value)}")
        elif word.startswith("-e") and not word.startswith("--") and len(word) > 2:
            out.append("-e" + pair(word[2:]))
        elif _PAIR.match(word) or any(c.isspace() for c in word):
            out.append(pair(word))
        else:
            out.append(word)
    return out, removed


def redact_text(text: str, values: Sequence[str]) -> str:
    """``text`` with every occurrence of ``values`` (longest first) replaced."""
    for value in sorted(set(values), key=len, reverse=True):
        if len(value) >= _MIN_HUNTED:
            text = text.replace(value, REDACTED)
    return text


#: The most crash logs kept (the oldest go first), and the most characters of one
#: traceback written: a long-lived MCP server that hits a bug on every call must not fill
#: the disk with them.
MAX_CRASH_LOGS = 100
MAX_CRASH_TEXT = 256 * 1024


def write_crash_log(exc: BaseException) -> Path:
    """Write ``exc``'s traceback to a new crash log under ``$PYRO_STATE_DIR/logs``; only
    the newest :data:`MAX_CRASH_LOGS` are kept.

    The log is owner-only (0600, in a 0700 folder). It names the command line with
    secrets taken out (:func:`redact_argv`), and those values are taken out of the
    traceback too; the environment is never written.

    Raises:
        OSError: the log folder or file cannot be written.
    """
    import time
    import traceback

    from pyro.__about__ import __version__
    from pyro.paths import PRIVATE_FILE_MODE, private_dir, state_dir

    private_dir(state_dir())
    folder = private_dir(state_dir() / "logs")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    argv, secrets = redact_argv(sys.argv)
    text = redact_text("".join(traceback.format_exception(exc)), secrets)
    if len(text) > MAX_CRASH_TEXT:
        half = MAX_CRASH_TEXT // 2
        text = (
            f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"
        )
    header = f"pyro {__version__}\nargv: {argv!r}\npython: {sys.version.split()[0]}\n\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(1, 100):
        # A long-lived process (the MCP server) may crash twice within a second.
        suffix = "" if attempt == 1 else f"-{attempt}"
        path = folder / f"crash-{stamp}-{os.getpid()}{suffix}.log"
        try:
            fd = os.open(path, flags, PRIVATE_FILE_MODE)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"too many crash logs named {path.name}")
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        f.write(header + text)
    _keep_newest(folder, MAX_CRASH_LOGS, path)
    return path


def _keep_newest(folder: Path, count: int, written: Path) -> None:
    """Remove all but the ``count`` newest crash logs (by name: their UTC time comes
    first), never the one just ``written``."""
    import contextlib

    logs = sorted(p for p in folder.glob("crash-*.log") if p != written)
    for old in logs[: max(0, len(logs) - (count - 1))]:
        with contextlib.suppress(OSError):
            old.unlink()
