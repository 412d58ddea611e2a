"""The phase lines ``pyro run``/``apply`` print on stderr: one ``key=value`` per field."""

from __future__ import annotations

import json
import shlex

import pytest

from pyro.cli.run_cmd import Reporter


def test_fields_with_spaces_are_quoted(capsys: pytest.CaptureFixture[str]) -> None:
    reason = 'guest agent did not answer the hello within 20 s ("hello")'
    Reporter(as_json=False).event(
        "run", "snapshot", {"vm_id": "abc123", "status": "restore-failed", "reason": reason}
    )
    line = capsys.readouterr().err.strip()
    assert line.startswith("[run] phase=snapshot vm_id=abc123 status=restore-failed reason=")
    quoted = line.split("reason=", 1)[1]
    assert json.loads(quoted) == reason
    # Still one field per shell word.
    assert shlex.split(line)[-1] == "reason=" + reason


def test_json_mode_prints_no_phase_lines(capsys: pytest.CaptureFixture[str]) -> None:
    Reporter(as_json=True).event("run", "start", {"vm_id": "abc123"})
    assert capsys.readouterr().err == ""
