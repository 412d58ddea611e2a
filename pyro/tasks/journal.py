"""The command journal of a task: one JSON line per exec, kept on the host beside the VM.

The journal lives outside the guest, so it survives whatever the command does to the guest
(``rm -rf /``, a reset to a snapshot) and reads without booting anything. Entries hold
redacted text only (see :mod:`pyro.tasks.secrets`); output is capped per entry.

An exec gets its number (``seq``) when it starts and is appended when it ends, so with
several execs at once the file is in end order; readers get start order (``seq``), with
each entry's ``overlaps``: the commands that ran while it ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from pyro.errors import StateError

JOURNAL_FILE = "journal.jsonl"
#: Output kept per stream and entry; the full (1 MiB capped) output goes to the caller.
JOURNAL_OUTPUT_CAP = 64 * 1024
_BLOCK = 64 * 1024
#: How far an entry can be from its place in the file: the agent runs at most 64 commands at
#: once, so an entry is appended at most that many lines after an entry that started later.
_OUT_OF_ORDER = 64


class JournalEntry(BaseModel):
    """One exec of a task, as the journal keeps it (all text redacted)."""

    seq: int
    kind: Literal["exec", "update"] = "exec"
    """``update``: a rename or relabel (:mod:`pyro.tasks.update`); ``argv`` holds its
    options and ``stdout`` what changed."""
    argv: list[str]
    cwd: str
    env: dict[str, str] = {}
    secret_env: list[str] = []
    stdin: bool = False
    """The command was given stdin (its bytes are not kept)."""
    exit_code: int | None
    timed_out: bool = False
    signal: int | None = None
    error: str | None = None
    started_at: float
    finished_at: float
    duration_ms: int
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    overlaps: list[int] = []
    """The ``seq`` of every other command that ran while this one did (worked out when the
    journal is read, among the entries read; not stored)."""


class TaskLogs(BaseModel):
    """A task's command journal (redacted), oldest first."""

    task_id: str
    entries: list[JournalEntry]


def cap_text(text: str, cap: int = JOURNAL_OUTPUT_CAP) -> tuple[str, bool]:
    """``text`` cut to at most ``cap`` UTF-8 bytes, and whether it was cut."""
    data = text.encode("utf-8")
    if len(data) <= cap:
        return text, False
    return data[:cap].decode("utf-8", "ignore"), True


class Journal:
    """Append-only JSON lines file; callers serialize appends (the task lock)."""

    def __init__(self, task_dir: Path) -> None:
        self.path = task_dir / JOURNAL_FILE

    def append(self, entry: JournalEntry) -> None:
        """Append one entry with a single write (a crash leaves at most a torn last line).

        Raises:
            StateError: the journal cannot be written.
        """
        line = (entry.model_dump_json(exclude={"overlaps"}) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(f"cannot write the task journal {self.path}: {exc}") from exc

    def entries(self, tail: int | None = None) -> list[JournalEntry]:
        """The entries in start order (``seq``), each with its ``overlaps``; only the last
        ``tail`` when given.

        Lines that do not parse (a torn write after a host crash) are skipped.
        """
        if tail is not None and tail <= 0:
            return []
        lines = self._tail_lines(tail + _OUT_OF_ORDER) if tail is not None else self._all_lines()
        out: list[JournalEntry] = []
        for line in lines:
            try:
                out.append(JournalEntry.model_validate_json(line))
            except ValidationError:
                continue
        out.sort(key=lambda e: e.seq)
        mark_overlaps(out)
        return out[-tail:] if tail is not None else out

    def _all_lines(self) -> list[bytes]:
        try:
            return [line for line in self.path.read_bytes().split(b"\n") if line.strip()]
        except FileNotFoundError:
            return []

    def _tail_lines(self, count: int) -> list[bytes]:
        # Read backwards in blocks: a long journal costs only what the tail needs.
        try:
            with self.path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                pos = f.tell()
                data = b""
                while pos > 0 and data.count(b"\n") <= count:
                    step = min(_BLOCK, pos)
                    pos -= step
                    f.seek(pos)
                    data = f.read(step) + data
        except FileNotFoundError:
            return []
        lines = [line for line in data.split(b"\n") if line.strip()]
        if pos > 0:
            lines = lines[1:]  # the first one may be cut
        return lines[-(count + 1) :]  # +1: a torn last line is skipped by the caller

    def last(self) -> JournalEntry | None:
        """The entry that started last."""
        entries = self.entries(tail=1)
        return entries[-1] if entries else None


def mark_overlaps(entries: list[JournalEntry]) -> None:
    """Set each exec's ``overlaps``: the other execs whose run intersects its own (an
    update takes no time and runs nothing)."""
    running: list[JournalEntry] = []
    for entry in sorted(entries, key=lambda e: (e.started_at, e.seq)):
        entry.overlaps = []
        if entry.kind != "exec":
            continue
        running = [other for other in running if other.finished_at > entry.started_at]
        for other in running:
            other.overlaps.append(entry.seq)
            entry.overlaps.append(other.seq)
        running.append(entry)
    for entry in entries:
        entry.overlaps.sort()
