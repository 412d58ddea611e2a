"""The installed ``pyro`` script for real: exit codes, stdout/stderr split, no tracebacks,
and plans that do not depend on the cwd or the cache location."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
PYRO = Path(sys.executable).with_name("pyro")
HELLO = ROOT / "examples" / "hello.yaml"

pytestmark = pytest.mark.skipif(not PYRO.exists(), reason=f"{PYRO} is not installed")


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(PYRO), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture
def isolated(tmp_path: Path) -> dict[str, str]:
    return {"PYRO_CACHE_DIR": str(tmp_path / "cache"), "PYRO_STATE_DIR": str(tmp_path / "state")}


def test_version_and_help() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("pyro ")
    assert "(catalog " in version.stdout
    help_ = run("--help")
    assert help_.returncode == 0 and "plan" in help_.stdout and "validate" in help_.stdout


def test_usage_error_exits_2_on_stderr() -> None:
    result = run("plan")
    assert result.returncode == 2
    assert result.stdout == "" and "Missing argument" in result.stderr


def test_missing_file_human_and_json(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    human = run("plan", missing)
    assert human.returncode == 1 and human.stdout == ""
    assert human.stderr.startswith("error: ") and "\nhint: " in human.stderr
    as_json = run("plan", missing, "--json")
    assert as_json.returncode == 1 and as_json.stderr == ""
    error = json.loads(as_json.stdout)["error"]
    assert json.loads(as_json.stdout)["ok"] is False
    assert {"type", "message", "hint"} <= set(error) and error["type"] == "SpecError"


def test_validate_exit_codes(tmp_path: Path) -> None:
    assert run("validate", str(HELLO)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: pyro/v1\nkind: Run\nmetadata: {name: x}\nspec: {steps: []}\n")
    result = run("validate", "--json", str(bad), str(HELLO))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert [f["ok"] for f in data["files"]] == [False, True]


def test_plan_json_is_byte_identical_across_cwd_and_cache(
    tmp_path: Path, isolated: dict[str, str]
) -> None:
    first = run("plan", str(HELLO), "--json", env=isolated)
    assert first.returncode in (0, 1), first.stderr
    again = run("plan", str(HELLO), "--json", env=isolated)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other_cache = {**isolated, "PYRO_CACHE_DIR": str(tmp_path / "other-cache")}
    moved = run("plan", os.path.relpath(HELLO, elsewhere), "--json", cwd=elsewhere, env=other_cache)
    assert first.stdout == again.stdout == moved.stdout
    # The one host path in a plan is the spec's folder, where its relative paths start.
    document = json.loads(first.stdout)
    assert document["kind"] == "Plan"
    assert document.pop("spec_dir") == str(HELLO.resolve().parent)
    assert str(tmp_path) not in first.stdout and str(ROOT) not in json.dumps(document)
