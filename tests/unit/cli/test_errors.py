"""The one error handler: exit codes 0/1/2/3/130, stderr vs stdout, JSON shape, crash logs."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from pyro.cli.errors import handle_errors, json_option, run_cli
from pyro.errors import EnvironmentNotFoundError, UsageError


def _command(exc: BaseException | None) -> click.Command:
    @click.command()
    @click.argument("name", required=False)
    @json_option
    @handle_errors
    def cmd(name: str | None, as_json: bool) -> None:
        if exc is not None:
            raise exc
        click.echo(f"ok {name}")

    return cmd


def test_success(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_command(None), ["x"], "pyro") == 0
    assert capsys.readouterr().out == "ok x\n"


@pytest.mark.parametrize("flag_first", [True, False])
def test_pyro_error_human(capsys: pytest.CaptureFixture[str], flag_first: bool) -> None:
    error = EnvironmentNotFoundError("environment 'x' not found")
    assert run_cli(_command(error), ["x"], "pyro") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "error: environment 'x' not found\n"
        "hint: run 'pyro env list' to see the environments pyro knows\n"
    )


@pytest.mark.parametrize("args", [["--json", "x"], ["x", "--json"]])
def test_pyro_error_json(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    error = EnvironmentNotFoundError("environment 'x' not found", "try harder")
    assert run_cli(_command(error), args, "pyro") == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {
        "ok": False,
        "error": {
            "type": "EnvironmentNotFoundError",
            "message": "environment 'x' not found",
            "hint": "try harder",
        },
    }


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_command(UsageError("bad combination")), ["x"], "pyro") == 2
    assert "error: bad combination" in capsys.readouterr().err
    assert run_cli(_command(None), ["x", "--nope"], "pyro") == 2
    assert "No such option" in capsys.readouterr().err


def test_click_usage_error_in_json_mode_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_command(None), ["--json", "a", "b"], "pyro") == 2
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["error"]["type"] == "UsageError"


def test_keyboard_interrupt_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_command(KeyboardInterrupt()), [], "pyro") == 130
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("as_json", [False, True])
def test_bug_exits_3_with_crash_log(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    as_json: bool,
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    args = ["--json"] if as_json else []
    assert run_cli(_command(ZeroDivisionError("boom")), args, "pyro") == 3
    out, err = capsys.readouterr()
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1
    assert "ZeroDivisionError: boom" in logs[0].read_text()
    assert "Traceback" in logs[0].read_text()
    shown = json.loads(out)["error"]["hint"] if as_json else err
    assert "this is a bug in pyro" in shown and str(logs[0]) in shown
    assert "Traceback" not in out + err


def test_bug_with_unwritable_state_dir_still_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PYRO_STATE_DIR", str(blocker))
    assert run_cli(_command(RuntimeError("boom")), [], "pyro") == 3
    err = capsys.readouterr().err
    assert "could not be written" in err and "this is a bug in pyro" in err


@pytest.mark.parametrize(("exit_arg", "code"), [(None, 0), (0, 0), (5, 5), ("bad", 1)])
def test_system_exit_passes_through(
    capsys: pytest.CaptureFixture[str], exit_arg: int | str | None, code: int
) -> None:
    assert run_cli(_command(SystemExit(exit_arg)), [], "pyro") == code


@pytest.mark.hostile
def test_crash_log_is_private_and_holds_no_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os
    import stat
    import sys

    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PYRO_REGISTRY_PASSWORD", "env-hunter2-value")
    old = os.umask(0)
    argv = [
        "pyro", "run", "debian:12", "--env", "TOKEN=argv-hunter2", "--env=API=eq-hunter2",
        "--var", "pw=var-hunter2", "DB_PASS=pair-hunter2", "sh -c 'curl -u u:sh-hunter2'",
        "--", "curl", "-H", "Authorization: Bearer cmd-hunter2",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    try:
        # The exception text repeats a value from argv, as a bug's message may.
        assert run_cli(_command(RuntimeError("bad value argv-hunter2")), [], "pyro") == 3
    finally:
        os.umask(old)
    capsys.readouterr()
    (log,) = (tmp_path / "logs").glob("crash-*.log")
    text = log.read_text()
    assert "hunter2" not in text, text
    assert "TOKEN=[REDACTED]" in text and "--env=API=[REDACTED]" in text
    assert "DB_PASS=[REDACTED]" in text and "RuntimeError: bad value [REDACTED]" in text
    assert "'run', 'debian:12'" in text  # what was run stays readable
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
