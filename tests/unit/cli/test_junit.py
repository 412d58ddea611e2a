"""JUnit XML from a RunResult: one testcase per exec step, failures carry output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pyro.cli.junit import render_junit
from pyro.execute.result import RunResult, StepResult


def test_one_testcase_per_exec_step_with_failures_and_skips() -> None:
    result = RunResult(
        ok=False,
        name="ci",
        plan_digest="sha256:0",
        environment="debian:12",
        environment_digest=None,
        backend="qemu-tcg",
        vm_id="abc",
        exit_code=2,
        failed_step="exec.test",
        duration_ms=1500,
        steps=[
            StepResult(id="boot", action="boot", status="ok"),
            StepResult(id="exec.build", action="exec", name="build", status="ok", stdout="built\n"),
            StepResult(
                id="exec.test",
                action="exec",
                name="test",
                status="failed",
                exit_code=2,
                stderr="assertion failed\n",
            ),
            StepResult(id="exec.deploy", action="exec", name="deploy", status="skipped"),
        ],
    )
    suite = ET.fromstring(render_junit(result)).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failure = cases["test"].find("failure")
    assert failure is not None and failure.text == "assertion failed\n"
    assert cases["deploy"].find("skipped") is not None
    assert cases["build"].findtext("system-out") == "built\n"
