"""Every spec pyro ships (examples, catalog environments) loads and carries a working modeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
def test_modeline_points_at_the_right_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    match = MODELINE.search(text)
    if path.name.endswith(".vars.yaml") or text.count("\nkind: ") > 1:
        assert match is None or "run" in match["target"]
        return
    assert match, f"{path} has no '# yaml-language-server: $schema=' modeline"
    schema = (path.parent / match["target"]).resolve()
    assert schema.is_file(), f"{path}: {schema} does not exist"
    kind = "environment" if "\nkind: Environment" in text else "run"
    assert schema.name == f"{kind}.schema.json"
