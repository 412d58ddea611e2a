"""``pyro schema run|environment [--output FILE]``: the editor schemas without a checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from pyro.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
CHECKED_IN = ROOT / "pyro" / "data" / "schemas"


@pytest.mark.parametrize("kind", ["run", "environment"])
def test_prints_the_checked_in_schema(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", kind]) == 0
    out = capsys.readouterr().out
    assert out == (CHECKED_IN / f"{kind}.schema.json").read_text(encoding="utf-8")
    schema = json.loads(out)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)


def test_works_without_any_schema_file(tmp_path: Path) -> None:
    """An install without schemas/ (or pyro/data/schemas) prints the same schema: it is
    generated from the models. A copy of the package with the folder left out, run as a
    separate process outside the checkout, shows it."""
    shutil.copytree(
        ROOT / "pyro",
        tmp_path / "pyro",
        ignore=shutil.ignore_patterns("__pycache__", "schemas", ".pyro"),
    )
    assert not (tmp_path / "pyro" / "data" / "schemas").exists()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONSAFEPATH": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pyro.cli", "schema", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (CHECKED_IN / "run.schema.json").read_text(encoding="utf-8")


def test_output_writes_the_file_and_its_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / ".pyro" / "environment.schema.json"
    assert main(["schema", "environment", "--output", str(target)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"wrote {target}\n"
    expected = (CHECKED_IN / "environment.schema.json").read_text(encoding="utf-8")
    assert target.read_text(encoding="utf-8") == expected
    assert sorted(p.name for p in target.parent.iterdir()) == ["environment.schema.json"]


def test_quiet_output_says_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "run.schema.json"
    assert main(["-q", "schema", "run", "--output", str(target)]) == 0
    assert capsys.readouterr() == ("", "")
    assert target.read_text(encoding="utf-8") == (CHECKED_IN / "run.schema.json").read_text()


def test_output_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker / "run.schema.json"
    assert main(["schema", "run", "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot write the schema to '{target}': File exists\n"
        "hint: give --output a file path in a folder you can write to, or omit it for stdout\n"
    )


def test_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "Run"]) == 2
    err = capsys.readouterr().err
    assert "'Run' is not one of 'run', 'environment'" in err
