"""`pyro apply FILE` tells a saved plan from a spec by parsing FILE, not by its name or by
looking for a substring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyro.cli.run_cmd import _read_plan_or_path
from pyro.errors import PlanError
from pyro.plan.model import Plan, render_json
from pyro.plan.planner import plan
from tests.unit.plan.fixtures import inventory, run_spec


@pytest.fixture
def saved_plan() -> str:
    return render_json(plan(run_spec(), inventory("installed")))


@pytest.mark.parametrize("name", ["plan.json", "plan.txt", "plan"])
def test_a_plan_is_a_plan_whatever_the_file_is_called(
    tmp_path: Path, saved_plan: str, name: str
) -> None:
    path = tmp_path / name
    path.write_text(saved_plan)
    assert isinstance(_read_plan_or_path(str(path)), Plan)
    compact = tmp_path / f"compact-{name}"
    compact.write_text(json.dumps(json.loads(saved_plan), separators=(",", ":")))
    assert isinstance(_read_plan_or_path(str(compact)), Plan)


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: pyro/v1\nkind: Run\n",  # YAML
        '{"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "x"}}',  # a JSON spec
        # a spec whose text merely mentions a plan (the old substring test took it for one)
        'kind: Run\nmetadata: {name: x, description: \'"kind": "Plan"\'}\n',
        '{"kind": "Plan", broken',  # not JSON: the spec loader says where it breaks
        "",
    ],
    ids=["yaml", "json-spec", "mentions-plan", "broken-json", "empty"],
)
def test_anything_else_is_left_to_the_spec_loader(tmp_path: Path, text: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(text)
    assert _read_plan_or_path(str(path)) == str(path)


def test_a_document_of_kind_plan_must_be_a_valid_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text('{"kind": "Plan", "digest": "x"}')
    with pytest.raises(PlanError, match="not a valid Plan document"):
        _read_plan_or_path(str(path))


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--var", "x=1"], "vars"), (["--run", "other"], "run_name")],
    ids=["var", "run"],
)
def test_flags_a_saved_plan_cannot_honour_are_refused_not_ignored(
    tmp_path: Path, saved_plan: str, flags: list[str], named: str
) -> None:
    """--var/--run change what a spec plans to; a saved plan was resolved already, so
    silently applying it as it stands would run something the user did not ask for."""
    from click.testing import CliRunner

    from pyro.cli.main import cli

    path = tmp_path / "plan.json"
    path.write_text(saved_plan)
    result = CliRunner().invoke(cli, ["apply", str(path), *flags])
    assert result.exit_code == 125, result.output
    assert f"{named} cannot change a Plan" in result.output
    assert "pyro plan FILE --var" in result.output
    assert "Traceback" not in result.output
