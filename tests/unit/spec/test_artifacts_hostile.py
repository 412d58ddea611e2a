"""A Run spec's ``artifacts`` from a spec nobody checked (an MCP caller, a cloned repository):
never into ``.git`` (red-team finding 1), and a bounded list (finding 4). The writer's own
rules are in tests/unit/execute/test_copy_out_hostile.py."""

from __future__ import annotations

from typing import Any

import pytest

from pyro.errors import SpecError
from pyro.spec import load_spec_data

pytestmark = pytest.mark.hostile


def run(*artifacts: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "t"},
        "spec": {
            "environment": "debian:12",
            "steps": [{"name": "a", "run": "x"}],
            "artifacts": list(artifacts),
        },
    }


def only_issue(spec: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(SpecError) as error:
        load_spec_data(spec)
    assert len(error.value.issues) == 1, error.value.issues
    return error.value.issues[0].to_dict()


@pytest.mark.parametrize(
    "target",
    [".git/config", "./.git/hooks/pre-commit", "sub/.git/", "a/.GIT/config", ".git", "x/git~1/y"],
)
def test_an_artifact_target_in_a_git_folder_is_refused(target: str) -> None:
    # The red team's artifact `.git/config` planted core.fsmonitor: `git status` ran it.
    issue = only_issue(run({"source": "/out/config", "target": target}))
    assert issue["pointer"] == "/spec/artifacts/0/target"
    assert "must not be in a .git folder" in issue["message"]
    assert "hook or git config runs commands" in issue["message"]


def test_a_git_folder_copied_into_a_target_folder_is_refused() -> None:
    issue = only_issue(run({"source": "/w/.git", "target": "keep/"}))
    assert issue["pointer"] == "/spec/artifacts/0"
    assert "'keep/.git', a .git folder" in issue["message"]


@pytest.mark.parametrize("target", ["gitconfig", ".gitignore", ".github/", "repo.git/", "git/"])
def test_names_that_only_look_like_git_are_fine(target: str) -> None:
    load_spec_data(run({"source": "/out/x", "target": target}))


def test_a_run_lists_at_most_256_artifacts() -> None:
    # Each artifact was one more copy-out cap on the host; the caps are now per run, and
    # the list itself is bounded.
    many = [{"source": "/big", "target": f"copy{i}"} for i in range(257)]
    issue = only_issue(run(*many))
    assert issue["pointer"] == "/spec/artifacts"
    load_spec_data(run(*many[:256]))
