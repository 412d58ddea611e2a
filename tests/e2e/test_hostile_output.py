"""A real guest prints escape sequences and bytes XML forbids (issue #17 items 10 and 11).

On a terminal (a pseudo-terminal here) `pyro run`, `pyro task exec`, `pyro task logs` and
`pyro task file list` show the text without them; a pipe and ``--json`` keep the bytes; the
JUnit report of a run whose steps print them parses, with counts that match its testcases.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.guest, pytest.mark.hostile]

PYRO = [sys.executable, "-m", "pyro.cli"]
HANG_GUARD_S = 300

#: Guest shell that prints a title change, a screen clear, colours, NUL, a vertical tab and a
#: byte that is not UTF-8 on stdout, and a cursor move on stderr.
PRINT_HOSTILE = (
    r"printf '\033]0;owned\007\033[2J\033[31mred\033[0m nul\000 vt\013 bad\377 ok\n';"
    r" printf '\033[1Aerr\n' >&2"
)


def _in_pty(args: list[str]) -> tuple[int, bytes]:
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([*PYRO, *args], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + HANG_GUARD_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(timeout=HANG_GUARD_S), bytes(output)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_clean(output: bytes, *, title_text: bool = False) -> str:
    text = output.decode("utf-8")  # the cleaned text is valid UTF-8 (bad bytes are U+FFFD)
    controls = [c for c in text.replace("\r\n", "\n") if c < " " and c not in "\n\t"]
    assert controls == [], text
    # The title's text is gone with its sequence (unless the command line quotes it).
    assert title_text or "owned" not in text
    return text


def _pyro(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*PYRO, *args], capture_output=True, timeout=HANG_GUARD_S, stdin=subprocess.DEVNULL
    )


def test_run_output_on_a_terminal_is_cleaned_and_on_a_pipe_kept(
    guest_install: Any, pyro_state: Path
) -> None:
    code, output = _in_pty(["run", "debian:12", "--", PRINT_HOSTILE])
    assert code == 0, output
    text = _assert_clean(output)
    assert "red nul vt bad\ufffd ok\r\n" in text and "err\r\n" in text
    assert "[run] phase=execute" in text  # pyro's own lines still arrive
    piped = _pyro("run", "debian:12", "--", PRINT_HOSTILE)
    assert piped.returncode == 0
    assert piped.stdout == b"\033]0;owned\007\033[2J\033[31mred\033[0m nul\000 vt\013 bad\377 ok\n"


def test_junit_of_steps_printing_hostile_output_parses(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "ci.yaml"
    spec.write_text(
        "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: hostile}\n"
        "spec:\n  environment: debian:12\n  steps:\n"
        f"    - {{name: colours, run: {json.dumps(PRINT_HOSTILE)}}}\n"
        f"    - {{name: fails, run: {json.dumps(PRINT_HOSTILE + '; exit 3')}}}\n"
        "    - {name: never, run: 'true'}\n"
    )
    report = tmp_path / "junit.xml"
    proc = _pyro("apply", str(spec), "--junit", str(report))
    assert proc.returncode == 3, proc.stderr
    suite = ET.fromstring(report.read_bytes()).find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["colours", "fails", "never"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    assert suite.get("errors") == "0"
    # Decoded with U+FFFD for the bad byte; colours gone; NUL and VT escaped.
    expected = "red nul\\x00 vt\\x0b bad\ufffd ok\n"
    assert cases[0].findtext("system-out") == expected
    failure = cases[1].find("failure")
    assert failure is not None and failure.text == "err\n"
    assert cases[1].findtext("system-out") == expected


@pytest.fixture
def task_id(guest_install: Any, pyro_state: Path) -> Iterator[str]:
    created = _pyro("task", "create", "debian:12", "--id-only")
    assert created.returncode == 0, created.stderr
    task = created.stdout.decode().strip()
    try:
        yield task
    finally:
        _pyro("task", "delete", task)


def test_task_exec_logs_and_file_list_on_a_terminal(task_id: str) -> None:
    hostile_name = r"$(printf 'evil\033]0;owned\007\033[2Jname')"
    code, output = _in_pty(
        ["task", "exec", task_id, "--", f'{PRINT_HOSTILE}; touch "/workspace/{hostile_name}"']
    )
    assert code == 0, output
    assert "red nul vt bad\ufffd ok\r\n" in _assert_clean(output)

    code, output = _in_pty(["task", "logs", task_id])
    assert code == 0, output
    # The journal shows the command line (which spells the sequences out as text) and
    # each output line (str.splitlines splits at the vertical tab).
    text = _assert_clean(output, title_text=True)
    assert "stdout| red nul vt\r\n" in text and "stdout|  bad\ufffd ok\r\n" in text

    code, output = _in_pty(["task", "file", "list", task_id])
    assert code == 0, output
    assert "evilname" in _assert_clean(output)

    listed = _pyro("task", "file", "list", task_id, "--json")
    names = [entry["name"] for entry in json.loads(listed.stdout)["entries"]]
    assert "evil\033]0;owned\007\033[2Jname" in names
