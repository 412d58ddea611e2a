"""JUnit XML for ``pyro apply --junit``: one testcase per exec step, failures with output.

Step output is the guest's, and step names and messages can carry anything a spec or a
guest wrote, so every text and attribute goes through :func:`xml_text` first: terminal
escape sequences (colours, titles) are removed, and characters XML 1.0 does not allow
(C0 controls other than tab/newline/CR, lone surrogates, U+FFFE/U+FFFF) are written as
visible escapes (``\\x00``, ``\\udc80`` as the byte ``\\x80``), so the report always parses.

The suite's ``tests``/``failures``/``errors``/``skipped`` counts are computed from the
testcases written. A run that never started (the spec, the vars or the plan was refused)
still gets a report: one testcase with an ``<error>`` naming what was wrong.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.cli.terminal import strip_sequences
from pyro.errors import PyroError

if TYPE_CHECKING:
    from pyro.execute.result import RunResult

#: JUnit consumers choke on huge system-out blocks; keep the tail that matters.
MAX_OUTPUT_CHARS = 64 * 1024

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def xml_text(text: str) -> str:
    """``text`` without terminal escape sequences and with only characters XML 1.0 allows."""
    return _NOT_XML.sub(_escape, strip_sequences(text))


def _tail(text: str) -> str:
    text = text if len(text) <= MAX_OUTPUT_CHARS else "[...]\n" + text[-MAX_OUTPUT_CHARS:]
    return xml_text(text)


def _case(suite: ET.Element, classname: str, name: str, time: str | None = None) -> ET.Element:
    attributes = {"classname": xml_text(classname), "name": xml_text(name)}
    if time is not None:
        attributes["time"] = time
    return ET.SubElement(suite, "testcase", attributes)


def _child(case: ET.Element, tag: str, text: str | None = None, **attributes: str) -> None:
    element = ET.SubElement(case, tag, {k: xml_text(v) for k, v in attributes.items()})
    if text is not None:
        element.text = text


def _document(*members: ET.Element) -> bytes:
    suites = ET.Element("testsuites")
    for suite in members:
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        for tag, attribute in (
            ("failure", "failures"),
            ("error", "errors"),
            ("skipped", "skipped"),
        ):
            suite.set(attribute, str(sum(1 for case in cases if case.find(tag) is not None)))
        suites.append(suite)
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def render_junit(result: RunResult) -> bytes:
    return _document(_suite(result))


def render_junit_many(results: list[RunResult]) -> bytes:
    """One report of many runs (a matrix's instances): a suite per run, with properties
    naming its matrix values, node, backend, attempt and plan digest."""
    return _document(*(_suite(result, properties=True) for result in results))


def _properties(suite: ET.Element, result: RunResult) -> None:
    info = result.instance
    values: dict[str, str] = {
        f"matrix.{k}": str(v) for k, v in (info.values if info else {}).items()
    }
    values["plan_digest"] = result.plan_digest
    values["backend"] = result.backend or ""
    values["attempt"] = str(info.attempt if info else 1)
    values["node"] = (info.node if info else None) or ""
    element = ET.SubElement(suite, "properties")
    for name, value in values.items():
        ET.SubElement(element, "property", name=xml_text(name), value=xml_text(value))


def _suite(result: RunResult, *, properties: bool = False) -> ET.Element:
    steps = result.exec_steps()
    suite = ET.Element(
        "testsuite", name=xml_text(result.name), time=f"{result.duration_ms / 1000:.3f}"
    )
    if properties:
        _properties(suite, result)
    classname = f"pyro.{result.name}"
    for step in steps:
        case = _case(suite, classname, step.name or step.id, f"{step.duration_ms / 1000:.3f}")
        if step.status in ("failed", "timed-out"):
            message = step.message or f"exit code {step.exit_code}"
            _child(case, "failure", _tail(step.stderr), type=step.status, message=message)
        elif step.status == "error":
            _child(case, "error", message=step.message or "error")
        elif step.status == "skipped":
            _child(case, "skipped", message="an earlier step failed")
        _child(case, "system-out", _tail(step.stdout))
        _child(case, "system-err", _tail(step.stderr))
    if result.error and not any(s.status == "error" for s in steps):
        case = _case(suite, classname, result.failed_step or "run")
        _child(
            case,
            "error",
            type=str(result.error.get("type")),
            message=str(result.error.get("message")),
        )
    return suite


def render_error_junit(source: str, error: PyroError) -> bytes:
    """A report for a run that never started: one testcase whose ``<error>`` is ``error``."""
    name = Path(source).name or source
    suite = ET.Element("testsuite", name=xml_text(name), time="0.000")
    what = {"SpecError": "spec", "PlanError": "plan", "StalePlanError": "plan"}
    case = _case(suite, f"pyro.{name}", what.get(error.type, "apply"), "0.000")
    lines = [error.summary]
    lines += [issue.render() for issue in getattr(error, "issues", [])[1:]]
    if error.hint:
        lines.append(f"hint: {error.hint}")
    _child(case, "error", _tail("\n".join(lines)), type=error.type, message=error.summary)
    return _document(suite)


def write_report(data: bytes, path: Path) -> None:
    """Write a report atomically (a CI system never reads half a file).

    Raises:
        PyroError: the report cannot be written there.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise PyroError(
            f"cannot write the JUnit report {str(path)!r}: {reason}",
            "give --junit a path in a folder you can write to",
        ) from error


def write_junit(result: RunResult, path: Path) -> None:
    """Write the report of ``result`` atomically.

    Raises:
        PyroError: the report cannot be written there.
    """
    write_report(render_junit(result), path)
