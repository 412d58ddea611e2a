"""Commands that pass a guest's exit code through report pyro's own failures as 125.

``run``, ``apply``, ``demo``, ``vm exec`` and ``task exec`` exit with their guest command's
code, so a usage error (2), a pyro error (1) or a bug (3) there would look like the guest's
own; they exit 125 instead, as ``docker run`` does. Every other command keeps 1/2/3. The
guest side (124 timeout, 126 not executable, 127 not found) is proven on real guests in
tests/e2e/test_run.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from pyro.cli.errors import PASSTHROUGH, handle_errors, json_option, run_cli
from pyro.cli.main import main
from pyro.errors import UsageError
from pyro.report.failure import EXIT_CANNOT_RUN

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["run", "debian:12"], 125),  # click: the command is missing
        (["run", "debian:12", "--vcpus", "many", "--", "true"], 125),  # click: bad flag value
        (["run", "debian:12", "--env", "NOEQ", "--", "true"], 125),  # pyro's UsageError
        (["vm", "exec"], 125),
        (["task", "exec"], 125),
        (["vm", "exec", "no-such-vm", "--", "true"], 125),  # NotFoundError
        (["apply", "/nonexistent/spec.yaml"], 125),
        (["vm", "status"], 2),  # not a pass-through command: usage error as before
        (["vm", "status", "no-such-vm"], 1),
        (["plan", "/nonexistent/spec.yaml"], 1),
        (["plan"], 2),
    ],
)
def test_own_failures_leave_the_guest_range(
    argv: list[str],
    code: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("error" in err.lower())


def test_json_mode_keeps_the_document_and_exits_125(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    assert main(["vm", "exec", "no-such-vm", "--json", "--", "true"]) == EXIT_CANNOT_RUN
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["error"]["type"] == "NotFoundError"


def _group(name: str, exc: BaseException) -> click.Group:
    @click.group()
    def root() -> None:
        pass

    @root.command(name)
    @json_option
    @handle_errors
    def cmd(as_json: bool) -> None:
        raise exc

    return root


@pytest.mark.parametrize(("name", "code"), [("run", 125), ("status", 3)])
def test_a_bug_in_a_pass_through_command_exits_125_with_its_crash_log(
    name: str,
    code: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    assert run_cli(_group(name, ZeroDivisionError("boom")), [name], "pyro") == code
    err = capsys.readouterr().err
    (log,) = (tmp_path / "logs").glob("crash-*.log")
    assert "this is a bug in pyro" in err and str(log) in err


@pytest.mark.parametrize("guest_code", [0, 1, 2, 3, 42, 124, 126, 127])
def test_a_guest_exit_code_passes_through_unchanged(guest_code: int) -> None:
    assert run_cli(_group("run", SystemExit(guest_code)), ["run"], "pyro") == guest_code


def test_usage_error_outside_pass_through_is_still_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_group("status", UsageError("bad")), ["status"], "pyro") == 2


def test_the_contract_documents_the_table_once() -> None:
    contract = (REPO / "docs" / "public-contract.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", contract, flags=re.MULTILINE))
    assert {"0", "1", "2", "3", "124", "125", "126", "127", "130"} <= set(rows)
    assert "could not run" in rows["125"]
    for words in PASSTHROUGH:
        assert f"`{' '.join(words)}`" in contract
    assert contract.count("| 125 |") == 1
