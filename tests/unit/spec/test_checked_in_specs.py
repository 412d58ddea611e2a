"""Every spec pyro ships (examples, catalog environments) loads and carries a working modeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from pyro.spec import load_spec_documents

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted(
    [
        *(ROOT / "examples").glob("*.yaml"),
        *(ROOT / "pyro" / "data" / "environments").glob("*.yaml"),
        *(ROOT / "pyro" / "data" / "examples").glob("*.yaml"),
        *(ROOT / "tests" / "specs" / "valid").glob("*.yaml"),
    ]
)
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<target>\S+)$", re.MULTILINE)


def test_there_are_shipped_specs() -> None:
    assert len(SHIPPED) >= 4


@pytest.mark.parametrize(
    "path",
    [p for p in SHIPPED if "tests" not in p.parts],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_shipped_spec_loads(path: Path) -> None:
    assert load_spec_documents(path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_modeline_names_the_schema_pyro_schema_writes(path: Path) -> None:
    """One rule for every shipped spec (docs/specs.md, "Editors"): the modeline names
    ``.pyro/KIND.schema.json`` beside the spec, which ``pyro schema KIND --output`` writes,
    so a spec copied out of the repo keeps working; in the repo, ``.pyro`` links to schemas/."""
    text = path.read_text(encoding="utf-8")
    match = MODELINE.search(text)
    if path.name.endswith(".vars.yaml") or text.count("\nkind: ") > 1:
        assert match is None or match["target"] == ".pyro/run.schema.json"
        return
    assert match, f"{path} has no '# yaml-language-server: $schema=' modeline"
    assert text.startswith(match[0]), "the modeline is the first line"
    kind = "environment" if "\nkind: Environment" in text else "run"
    assert match["target"] == f".pyro/{kind}.schema.json"
    in_repo = path.parent / match["target"]
    assert in_repo.read_text() == (ROOT / "schemas" / f"{kind}.schema.json").read_text()


COPIED = [
    ROOT / "examples" / "hello.yaml",
    ROOT / "pyro" / "data" / "environments" / "debian-12.yaml",
]


@pytest.mark.parametrize("path", COPIED, ids=lambda p: p.name)
def test_a_copied_spec_validates_against_the_schema_its_modeline_names(
    path: Path, tmp_path: Path
) -> None:
    """The user's way, end to end: copy the spec into an empty folder, write the schema with
    ``pyro schema KIND --output .pyro/KIND.schema.json`` (a pyro process run there), and
    resolve the modeline as yaml-language-server does (relative to the spec file)."""
    copy = tmp_path / path.name
    copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    text = copy.read_text(encoding="utf-8")
    target = MODELINE.search(text)
    assert target is not None
    kind = Path(target["target"]).name.removesuffix(".schema.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pyro.cli", "schema", kind, "--output", target["target"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    schema = json.loads((copy.parent / target["target"]).read_text(encoding="utf-8"))
    data = yaml.safe_load(text)
    assert list(Draft7Validator(schema).iter_errors(data)) == []
    data["spec"]["timeoutSecs"] = 5
    assert [e.message for e in Draft7Validator(schema).iter_errors(data)] == [
        "Additional properties are not allowed ('timeoutSecs' was unexpected)"
    ]
