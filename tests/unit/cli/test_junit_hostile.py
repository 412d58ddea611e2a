"""JUnit reports from hostile output (issue #17 item 11): always parseable XML, counts that
match the testcases, and a report even when the run never started."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyro.cli.junit import render_junit
from pyro.execute.result import RunResult, StepResult

pytestmark = pytest.mark.hostile

ROOT = Path(__file__).parents[3]

#: What a step may print: colours, NUL, vertical tab, form feed, a lone surrogate, a
#: surrogate-escaped byte (invalid UTF-8), a noncharacter and a title-setting OSC string.
HOSTILE = (
    "\x1b[31mred\x1b[0m nul\x00 vt\x0b ff\x0c lone\ud800 byte\udcff non\ufffe \x1b]0;title\x07end\n"
)


def _suite(data: bytes) -> ET.Element:
    suite = ET.fromstring(data).find("testsuite")
    assert suite is not None
    return suite


def assert_counts_match(suite: ET.Element) -> None:
    """What a JUnit schema consumer checks: the suite's counts are its testcases'."""
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases))
    for tag, attribute in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        assert suite.get(attribute) == str(sum(1 for c in cases if c.find(tag) is not None))
    for case in cases:
        outcomes = [case.find(tag) for tag in ("failure", "error", "skipped")]
        assert sum(1 for o in outcomes if o is not None) <= 1
        assert case.get("name") and case.get("classname")


def _result(**overrides: object) -> RunResult:
    fields: dict[str, object] = {
        "ok": False,
        "name": "ci",
        "plan_digest": "sha256:0",
        "environment": "debian:12",
        "environment_digest": None,
        "backend": "qemu-tcg",
        "vm_id": "abc",
        "exit_code": 1,
        "failed_step": "exec.test",
        "duration_ms": 10,
        "steps": [],
    }
    fields.update(overrides)
    return RunResult.model_validate(fields)


def test_hostile_step_output_and_names_make_a_parseable_report() -> None:
    result = _result(
        steps=[
            StepResult(id="exec.build", action="exec", name="build", status="ok", stdout=HOSTILE),
            StepResult(
                id="exec.test",
                action="exec",
                name="te\x1b[1mst\x00",
                status="failed",
                exit_code=1,
                stderr=HOSTILE,
                message="exit\x07 code 1",
            ),
        ]
    )
    suite = _suite(render_junit(result))
    assert_counts_match(suite)
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == ["build", "test\\x00"]
    expected = "red nul\\x00 vt\\x0b ff\\x0c lone\\ud800 byte\\xff non\\ufffe end\n"
    assert cases[0].findtext("system-out") == expected
    failure = cases[1].find("failure")
    assert failure is not None and failure.text == expected
    assert failure.get("message") == "exit\\x07 code 1"


def test_counts_match_the_testcases_when_the_run_itself_failed() -> None:
    # The run failed outside any exec step (e.g. the boot): one more testcase, an error.
    result = _result(
        exit_code=None,
        failed_step="boot",
        error={"type": "BootError", "message": "guest \x1b[2Jdid not boot\x00", "hint": "h"},
        steps=[
            StepResult(id="boot", action="boot", status="failed"),
            StepResult(id="exec.a", action="exec", name="a", status="skipped"),
            StepResult(id="exec.b", action="exec", name="b", status="skipped"),
        ],
    )
    suite = _suite(render_junit(result))
    assert_counts_match(suite)
    assert (suite.get("tests"), suite.get("errors"), suite.get("skipped")) == ("3", "1", "2")
    error = suite.findall("testcase")[-1].find("error")
    assert error is not None and error.get("message") == "guest did not boot\\x00"


def _apply(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYRO_STATE_DIR": str(tmp_path / "state"),
        "PYRO_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pyro.cli", "apply", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.mark.parametrize(
    ("spec", "extra", "code", "case_name", "error_type"),
    [
        ("kind: Run\nspec: {}\n", [], 125, "spec", "SpecError"),
        ("a: {{ vars.missing }}\n", [], 125, "spec", "SpecError"),
        ("apiVersion: pyro/v1\n", ["--var", "not a pair"], 125, "apply", "UsageError"),
        ('{"kind": "Plan", "digest": "x"}', [], 125, "plan", "PlanError"),
    ],
    ids=["invalid-spec", "template", "bad-var", "bad-plan"],
)
def test_a_run_that_never_started_still_writes_a_report(
    tmp_path: Path, spec: str, extra: list[str], code: int, case_name: str, error_type: str
) -> None:
    source = tmp_path / ("plan.json" if spec.startswith("{") else "ci.yaml")
    source.write_text(spec)
    report = tmp_path / "reports" / "junit.xml"
    result = _apply(tmp_path, str(source), "--junit", str(report), *extra)
    assert result.returncode == code
    assert result.stderr.startswith("error: ")
    suite = _suite(report.read_bytes())
    assert_counts_match(suite)
    assert (suite.get("tests"), suite.get("errors")) == ("1", "1")
    (case,) = suite.findall("testcase")
    assert case.get("name") == case_name
    error = case.find("error")
    assert error is not None and error.get("type") == error_type
    assert error.get("message") in result.stderr


def test_a_report_that_cannot_be_written_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "ci.yaml"
    source.write_text("kind: Run\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _apply(tmp_path, str(source), "--junit", str(blocker / "junit.xml"))
    assert result.returncode == 125
    assert "warning: cannot write the JUnit report" in result.stderr
    assert "error: " in result.stderr
