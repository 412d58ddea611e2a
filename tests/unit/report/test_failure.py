"""How a failure is reported by both faces (pyro.report.failure): exit codes, the error
document, and a bug's crash log with the secrets of the command line taken out.

The CLI's side (stderr, ``--json``, exit codes end to end) is tests/unit/cli/test_errors.py;
the MCP server's is tests/unit/mcp/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.errors import OutsideRootError, SpecError, SpecIssue, StateError
from pyro.report.failure import (
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_USAGE,
    MAX_CRASH_LOGS,
    MAX_CRASH_TEXT,
    describe,
    redact_argv,
    write_crash_log,
)


def test_a_pyro_error_is_its_own_document() -> None:
    error = SpecError([SpecIssue("bad", pointer="/spec", file="a.yaml", line=2)])
    failure = describe(error)
    assert failure.exit_code == EXIT_ERROR
    assert failure.document == error.to_dict() and failure.document["issues"]
    assert failure.text() == f"error: {error.summary}\nhint: {error.hint}"


def test_a_usage_error_exits_2() -> None:
    failure = describe(OutsideRootError("/etc is outside the root"))
    assert (failure.exit_code, failure.type) == (EXIT_USAGE, "OutsideRootError")


def test_a_bug_names_its_crash_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    failure = describe(RuntimeError("boom"))
    assert failure.exit_code == EXIT_BUG
    assert failure.document["type"] == "InternalError"
    assert failure.message == "internal error: RuntimeError: boom"
    (log,) = (tmp_path / "logs").glob("crash-*.log")
    assert str(log) in (failure.hint or "") and "RuntimeError: boom" in log.read_text()


def test_a_bug_whose_log_cannot_be_written_still_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PYRO_STATE_DIR", str(blocker / "state"))
    assert describe(StateError("not a bug")).exit_code == EXIT_ERROR  # no log needed
    failure = describe(KeyError("k"))
    assert failure.exit_code == EXIT_BUG
    assert "the crash log could not be written" in (failure.hint or "")


def test_redact_argv_keeps_what_is_not_secret() -> None:
    argv, removed = redact_argv(
        ["pyro", "task", "exec", "abc123", "--secret-env", "TOKEN", "--cwd", "/w", "-eK=V"]
    )
    assert argv == [
        "pyro", "task", "exec", "abc123", "--secret-env", "TOKEN", "--cwd", "/w", "-eK=[REDACTED]"
    ]  # fmt: skip
    assert removed == ["V"]
    assert redact_argv(["pyro", "task", "create", "--secret", "novalue"])[0][-1] == "[REDACTED]"
    assert redact_argv(["pyro", "run", "--env"])[0] == ["pyro", "run", "--env"]


def test_two_crashes_in_one_second_get_two_logs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    monkeypatch.setattr("time.strftime", lambda *_: "20260101T000000Z")
    first = write_crash_log(RuntimeError("one"))
    second = write_crash_log(RuntimeError("two"))
    assert first != second and "two" in second.read_text()


def test_a_process_that_crashes_on_every_call_keeps_only_the_newest_logs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A long-lived MCP server hitting a bug per call must not fill the disk with logs.
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    seconds = iter(range(1000))
    monkeypatch.setattr("time.strftime", lambda *_: f"20260101T00{next(seconds):04d}Z")
    written = [write_crash_log(RuntimeError(f"call {n}")) for n in range(MAX_CRASH_LOGS + 5)]
    kept = sorted((tmp_path / "logs").glob("crash-*.log"))
    assert kept == sorted(written[5:])
    huge = write_crash_log(RuntimeError("x" * (4 * MAX_CRASH_TEXT)))
    text = huge.read_text()
    assert len(text) < MAX_CRASH_TEXT + 1024 and "characters left out" in text
