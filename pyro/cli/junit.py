"""JUnit XML for ``pyro apply --junit``: one testcase per exec step, failures with output."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from pyro.execute.result import RunResult

#: JUnit consumers choke on huge system-out blocks; keep the tail that matters.
MAX_OUTPUT_CHARS = 64 * 1024


def _tail(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT_CHARS else "[...]\n" + text[-MAX_OUTPUT_CHARS:]


def render_junit(result: RunResult) -> bytes:
    steps = result.exec_steps()
    suite = ET.Element(
        "testsuite",
        name=result.name,
        tests=str(len(steps)),
        failures=str(sum(1 for s in steps if s.status in ("failed", "timed-out"))),
        errors=str(sum(1 for s in steps if s.status == "error") + (1 if result.error else 0)),
        skipped=str(sum(1 for s in steps if s.status == "skipped")),
        time=f"{result.duration_ms / 1000:.3f}",
    )
    for step in steps:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"pyro.{result.name}",
            name=step.name or step.id,
            time=f"{step.duration_ms / 1000:.3f}",
        )
        if step.status in ("failed", "timed-out"):
            failure = ET.SubElement(
                case,
                "failure",
                type=step.status,
                message=step.message or f"exit code {step.exit_code}",
            )
            failure.text = _tail(step.stderr)
        elif step.status == "error":
            ET.SubElement(case, "error", message=step.message or "error")
        elif step.status == "skipped":
            ET.SubElement(case, "skipped", message="an earlier step failed")
        ET.SubElement(case, "system-out").text = _tail(step.stdout)
        ET.SubElement(case, "system-err").text = _tail(step.stderr)
    if result.error and not any(s.status == "error" for s in steps):
        case = ET.SubElement(
            suite, "testcase", classname=f"pyro.{result.name}", name=result.failed_step or "run"
        )
        ET.SubElement(
            case,
            "error",
            type=str(result.error.get("type")),
            message=str(result.error.get("message")),
        )
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write_junit(result: RunResult, path: Path) -> None:
    """Write the report atomically (a CI system never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(render_junit(result))
    os.replace(tmp, path)
