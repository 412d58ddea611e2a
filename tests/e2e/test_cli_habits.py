"""CLI habits on real guests: ``-q``/``-v`` around a run, and TAB completing a real task's id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]


def pyro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PYRO, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_quiet_leaves_only_the_guest_output(guest_install: Any, pyro_state: Path) -> None:
    for args in (["run", "-q"], ["-q", "run"], ["run", "--quiet"]):
        result = pyro(*args, "debian:12", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n"), args


def test_normal_and_verbose_markers(guest_install: Any, pyro_state: Path) -> None:
    normal = pyro("run", "debian:12", "--", "true")
    assert normal.returncode == 0
    assert "[run] phase=execute" in normal.stderr and "action=" not in normal.stderr
    verbose = pyro("run", "-v", "debian:12", "--", "true")
    assert verbose.returncode == 0
    lines = verbose.stderr.splitlines()
    assert any(
        line.startswith("[run] step=boot action=boot status=ok duration_ms=") for line in lines
    )
    assert any(
        line.startswith("[run] step=command action=exec status=ok duration_ms=")
        and line.endswith("exit code 0")
        for line in lines
    )
    assert lines[-1].startswith("[run] environment=debian:12 ")


def test_tab_completes_the_id_of_a_created_task(guest_install: Any, pyro_state: Path) -> None:
    created = pyro("task", "create", "debian:12", "--id-only")
    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    try:
        offered = pyro(
            env={
                "_PYRO_COMPLETE": "bash_complete",
                "COMP_WORDS": f"pyro task exec {task_id[:3]}",
                "COMP_CWORD": "3",
            }
        )
        assert offered.returncode == 0
        assert offered.stdout.split() == [f"plain,{task_id}"]
        # The id it offers is one pyro takes.
        ran = pyro("task", "exec", task_id, "--", "echo", "hi")
        assert (ran.returncode, ran.stdout) == (0, "hi\n")
    finally:
        assert pyro("task", "delete", task_id).returncode == 0
