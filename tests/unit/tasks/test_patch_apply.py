"""The all-or-nothing hunk application of ``task patch`` (pyro.tasks.patch._apply)."""

from __future__ import annotations

import difflib

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
