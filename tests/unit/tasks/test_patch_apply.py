"""The all-or-nothing hunk application of ``task patch`` (pyro.tasks.patch._apply)."""

from __future__ import annotations

import difflib

import pytest
from unidiff.patch import PatchSet

from pyro.tasks.patch import _apply

OLD = [f"line {n}\n" for n in range(1, 21)]


def _patch(old: list[str], new: list[str]) -> PatchSet:
    return PatchSet("".join(difflib.unified_diff(old, new, "a/f", "b/f", n=2)))


def test_hunks_apply_at_their_lines() -> None:
    new = [*OLD]
    new[1], new[15] = "two\n", "sixteen\n"
    new.append("more\n")
    lines, failures = _apply(OLD, _patch(OLD, new)[0])
    assert failures == [] and lines == new


def test_every_failing_hunk_is_reported_and_the_others_are_checked_too() -> None:
    new = [*OLD]
    new[1], new[10], new[17] = "two\n", "eleven\n", "eighteen\n"
    patched = _patch(OLD, new)[0]
    assert len(patched) == 3
    drifted = [*OLD]
    drifted[1], drifted[17] = "changed meanwhile\n", "also changed\n"
    _, failures = _apply(drifted, patched)
    assert [n for n, _ in failures] == [1, 3]
    assert "not what the hunk expects" in failures[0][1]


def test_a_missing_final_newline_is_kept_both_ways() -> None:
    text = "a\nb"
    patch = PatchSet(
        "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n"
    )
    lines, failures = _apply(text.splitlines(keepends=True), patch[0])
    assert failures == [] and "".join(lines) == "a\nc\n"


def test_an_added_file_is_its_added_lines() -> None:
    patch = PatchSet("--- /dev/null\n+++ b/n\n@@ -0,0 +1,2 @@\n+x\n+y\n")
    assert patch[0].is_added_file
    assert _apply([], patch[0]) == (["x\n", "y\n"], [])


def test_a_patch_cannot_make_the_host_hold_more_than_its_budget_of_guest_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small patch naming many large guest files (a caller and its guest together):
    refused once the files read pass the budget, before anything is written and without
    reading the rest; the host never holds them all."""
    import contextlib
    from collections.abc import Iterator
    from types import SimpleNamespace
    from typing import Any, cast

    from helpers.lying_agent import LyingAgent

    from pyro.errors import UsageError
    from pyro.tasks import patch

    monkeypatch.setattr(patch, "MAX_TOTAL_BYTES", 8 << 20, raising=False)
    agent = LyingAgent()
    body = b"first\n" + b"x" * (1 << 20) + b"\n"
    diff = ""
    for n in range(40):
        agent.contents[f"/workspace/f{n}"] = body
        diff += f"--- a/f{n}\n+++ b/f{n}\n@@ -1 +1 @@\n-first\n+changed\n"

    class Manager:
        def get(self, task_id: str) -> tuple[None, Any]:
            return None, SimpleNamespace(workspace="/workspace")

        @contextlib.contextmanager
        def session(self, task_id: str) -> Iterator[LyingAgent]:
            yield agent

        def touch(self, task_id: str) -> None:
            raise AssertionError("nothing may be written")

    with pytest.raises(UsageError, match="reads more than 8388608 bytes of files"):
        patch.apply(cast(Any, Manager()), "t", diff.encode())
    assert len(agent.reads) <= 9
