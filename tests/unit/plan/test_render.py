"""Snapshots of both plan renderings, for every valid spec fixture and inventory variant."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from pyro.cli.vars import parse_vars
from pyro.plan.model import plan_from_json, render_json
from pyro.plan.planner import plan
from pyro.plan.render import SYMBOLS, render_text
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.load import load_spec_documents
from pyro.spec.model import RunSpec
from pyro.spec.ref import SpecPathRef

from .fixtures import CATALOG, inventory

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
SPECS = sorted(
    path
    for path in [
        *HERE.glob("specs/*.yaml"),
        ROOT / "examples" / "hello.yaml",
        *ROOT.glob("tests/specs/valid/*.yaml"),
    ]
    if not path.name.endswith(".vars.yaml")  # template variables for the spec beside it
)
VARIANTS = ["installed", "pullable", "buildable"]


def _plans(path: Path, variant: str) -> list[tuple[str, object]]:
    vars_file = path.with_name(path.stem + ".vars.yaml")
    variables = parse_vars([], vars_file) if vars_file.exists() else None
    documents = load_spec_documents(path, vars=variables)
    environments = {
        d.spec.metadata.name: d.spec for d in documents if isinstance(d.spec, EnvironmentSpec)
    }
    results = []
    for doc in documents:
        if not isinstance(doc.spec, RunSpec):
            continue
        inv = inventory(variant)
        if isinstance(doc.spec.spec.environment_ref, SpecPathRef):
            # what the gatherer would add for an Environment spec named by path
            entry = CATALOG.model_copy(update={"ref": doc.spec.spec.environment, "name": "by-path"})
            inv = inv.model_copy(update={"catalog": [*inv.catalog, entry]})
        # The spec's folder is recorded in the plan: the same one wherever the checkout is.
        doc = dataclasses.replace(doc, base_dir=Path("/specs") / path.parent.name)
        results.append((doc.spec.metadata.name, plan(doc, inv, environments=environments)))
    return results


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", SPECS, ids=_id)
def test_renderings(path: Path, variant: str, snapshot: SnapshotAssertion) -> None:
    plans = _plans(path, variant)
    for name, result in plans:
        text = render_text(result)  # type: ignore[arg-type]
        document = render_json(result)  # type: ignore[arg-type]
        assert text == snapshot(name=f"{name}-text")
        assert document == snapshot(name=f"{name}-json")
        assert plan_from_json(document) == result


def test_text_is_ascii_and_has_a_legend() -> None:
    for path in SPECS:
        for _, result in _plans(path, "installed"):
            lines = render_text(result).splitlines()  # type: ignore[arg-type]
            assert all(line[:4].isascii() for line in lines)
            assert lines[-1].startswith("legend: ")
            assert all(symbol in lines[-1] for symbol in SYMBOLS.values())
