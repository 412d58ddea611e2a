"""The hostile-input stage: every ``hostile``-marked regression test, run once and counted.

Those tests are the security boundaries' proofs (docs/security.md): a lying guest agent, a
malicious registry, an MCP caller reaching outside its root, input bombs. The soak runs them
in a pytest child with private state and cache folders, reads the JUnit report it writes,
and counts each outcome; a failure or an error counts as a traceback in the soak's table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness import ROOT, Soak


def hostile_inputs(soak: Soak, timeout_s: float = 1200) -> dict[str, Any]:
    """Run ``pytest -m hostile``; return the counts and the names of failing tests."""
    report = soak.work / "hostile-junit.xml"
    env = dict(os.environ)
    # The tests make their own private dirs; the soak's registry and dirs stay out of it.
    for key in [k for k in env if k.startswith("PYRO_")]:
        del env[key]
    argv = [sys.executable, "-m", "pytest", "-m", "hostile", "-q", "-p", "no:cacheprovider"]
    argv += [f"--junitxml={report}", "-o", "junit_family=xunit2"]
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    counts = _counts(report)
    if proc.returncode not in (0, 5) or counts["failed"]:
        soak.tracebacks.append(
            f"hostile stage: pytest exit {proc.returncode}, failed {counts['failing']}: "
            f"{proc.stdout[-1500:]}"
        )
    return counts


def _counts(report: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "failing": []}
    if not report.exists():
        return result
    for case in ET.parse(report).getroot().iter("testcase"):
        result["tests"] += 1
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            result["failed"] += 1
            result["failing"].append(name)
        elif case.find("skipped") is not None:
            result["skipped"] += 1
        else:
            result["passed"] += 1
    return result
