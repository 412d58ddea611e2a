"""What ``import pyro`` offers: every public type and error by name, cheaply; results that
read like ``subprocess.CompletedProcess``; argument types that match the spec's values."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import get_args

import pytest

import pyro
from pyro import CommandFailedError, errors
from pyro.execute.result import RunResult, StepResult, reported_step
from pyro.machines.exec import ExecOutput
from pyro.spec.model import Backend, NetworkPolicy

REPO = Path(__file__).resolve().parents[3]


def test_every_public_name_resolves() -> None:
    missing = [name for name in pyro.__all__ if not hasattr(pyro, name)]
    assert missing == []
    assert set(pyro.__all__) <= set(dir(pyro))
    for name in ("Pyro", "AsyncPyro", "RunResult", "StepResult", "Plan", "ExecOutput"):
        assert inspect.isclass(getattr(pyro, name)), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = pyro.Nope  # type: ignore[attr-defined]


def test_every_error_class_is_exported_from_pyro() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.PyroError)
    }
    assert "CommandFailedError" in classes
    assert classes <= set(pyro.__all__)
    assert all(getattr(pyro, name) is getattr(errors, name) for name in classes)


def test_import_pyro_loads_only_the_errors() -> None:
    code = "import sys, json, pyro\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = {m for m in json.loads(done.stdout) if m == "pyro" or m.startswith("pyro.")}
    assert loaded == {"pyro", "pyro.__about__", "pyro.errors", "pyro.lazy"}
    assert "pydantic" not in json.loads(done.stdout)


def test_pyro_plan_stays_the_function_when_the_subpackage_is_imported() -> None:
    import pyro.plan.planner  # binds 'plan' on the package, for any module but this one

    assert isinstance(pyro.plan, types.FunctionType)
    plan = pyro.plan(REPO / "examples" / "hello.yaml")
    assert plan.metadata.name == "hello"
    assert isinstance(pyro.plan, types.FunctionType)


def test_argument_types_match_the_spec_values() -> None:
    assert set(get_args(pyro.BackendName)) == {b.value for b in Backend}
    # One command has no allowlist to go with the allowlist policy.
    assert set(get_args(pyro.CommandNetwork)) == {p.value for p in NetworkPolicy} - {"allowlist"}
    network = inspect.signature(pyro.Pyro.run_in_vm).parameters["network"]
    assert network.annotation == "CommandNetwork"


def _step(step_id: str, status: str, code: int | None, out: str) -> StepResult:
    return StepResult(
        id=step_id, action="exec", status=status, exit_code=code, stdout=out, stderr=out.upper()
    )  # type: ignore[arg-type]


def _result(steps: list[StepResult], *, failed: str | None, code: int | None) -> RunResult:
    shown = reported_step(steps, failed)
    return RunResult(
        ok=failed is None,
        name="demo",
        plan_digest="sha256:0",
        environment="debian:12",
        environment_digest=None,
        backend="qemu-tcg",
        vm_id=None,
        exit_code=code,
        failed_step=failed,
        stdout=shown.stdout if shown else "",
        stderr=shown.stderr if shown else "",
        duration_ms=1,
        steps=steps,
    )


def test_the_reported_step_is_the_failed_one_else_the_last_that_ran() -> None:
    first, second = _step("exec-1", "ok", 0, "one"), _step("exec-2", "failed", 2, "two")
    skipped = StepResult(id="exec-3", action="exec", status="skipped")
    boot = StepResult(id="boot", action="boot", status="ok")
    assert reported_step([boot, first, second, skipped], "exec-2") is second
    assert reported_step([boot, first, second, skipped], None) is second
    assert reported_step([boot, first], None) is first
    assert reported_step([boot], "boot") is None


def test_check_returncode_raises_command_failed_with_the_result() -> None:
    ok = _result([_step("exec-1", "ok", 0, "fine")], failed=None, code=0)
    ok.check_returncode()
    failed = _result([_step("exec-1", "failed", 4, "bad")], failed="exec-1", code=4)
    with pytest.raises(CommandFailedError) as caught:
        failed.check_returncode()
    assert caught.value.result is failed
    assert (caught.value.exit_code, caught.value.stdout, caught.value.stderr) == (4, "bad", "BAD")
    assert caught.value.summary == "run 'demo' failed at step exec-1: exit code 4"
    assert caught.value.to_dict()["exit_code"] == 4


def test_check_returncode_of_a_run_pyro_could_not_carry_out_names_the_error() -> None:
    result = _result([], failed="boot", code=None).model_copy(
        update={"error": {"type": "BootError", "message": "no hello", "hint": "see the log"}}
    )
    with pytest.raises(CommandFailedError) as caught:
        result.check_returncode()
    assert caught.value.exit_code is None
    assert caught.value.summary.endswith("boot: no hello")
    assert caught.value.hint == "see the log"


@pytest.mark.parametrize(("code", "timed_out", "raises"), [(0, False, False), (1, False, True)])
def test_exec_output_check_returncode(code: int, timed_out: bool, raises: bool) -> None:
    output = ExecOutput(
        vm_id="v1",
        exit_code=code,
        timed_out=timed_out,
        stdout="o",
        stderr="e",
        stdout_truncated=False,
        stderr_truncated=False,
        duration_ms=1,
    )
    if not raises:
        output.check_returncode()
        return
    with pytest.raises(CommandFailedError, match="the command in vm v1 exited 1"):
        output.check_returncode()


def test_a_timed_out_exec_output_fails_its_check() -> None:
    output = ExecOutput(
        vm_id="v1",
        exit_code=124,
        timed_out=True,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        duration_ms=1,
    )
    with pytest.raises(CommandFailedError, match="timed out"):
        output.check_returncode()
