"""Every valid fixture loads; every invalid one fails with the expected location and text."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.errors import SpecError
from pyro.spec import EnvironmentSpec, RunSpec, load_spec_documents

from .specfiles import INVALID, VALID, expectations, sidecar_vars


def test_there_are_enough_fixtures() -> None:
    assert len(VALID) >= 8
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_loads(path: Path) -> None:
    loaded = load_spec_documents(path, vars=sidecar_vars(path))
    assert loaded
    for index, item in enumerate(loaded):
        assert isinstance(item.spec, RunSpec | EnvironmentSpec)
        assert item.index == index
        assert item.path == path.resolve()
        assert item.base_dir == path.resolve().parent
        assert item.source_name == str(path)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_fails_where_expected(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(SpecError) as caught:
        load_spec_documents(str(path), vars=sidecar_vars(path))
    issues = [issue.to_dict() for issue in caught.value.issues]
    assert issues
    for issue in issues:
        assert issue["file"] == str(path)
    for expectation in expected:
        assert any(expectation.matches(issue) for issue in issues), (
            f"no issue matches {expectation}; got:\n"
            + "\n".join(issue.render() for issue in caught.value.issues)
        )
