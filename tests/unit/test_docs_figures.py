"""Measured times are stated once, in docs/performance.md; other docs link there.

Three docs once gave the warm pool's latency as ≈35 ms, "about 55 ms" and 50 ms. An
approximate time (``≈ 25 ms``, ``~5 min``, ``about 0.2 s``) outside performance.md is a
measured figure repeated, and fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
APPROXIMATE_TIME = re.compile(
    r"(≈|~|\babout|\baround|\broughly)\s?\d[\d.,]*(\s?[\u2013-]\s?\d[\d.,]*)?\s?"
    r"(ms|s|min|minutes?|seconds?|hours?)\b"
)


CODE_SPAN = re.compile(r"`[^`]*`")


def approximate_times(text: str) -> list[str]:
    """Approximate times in ``text``, outside code spans (those show examples)."""
    return [m.group(0) for m in APPROXIMATE_TIME.finditer(CODE_SPAN.sub("", text))]


def test_the_pattern_finds_the_old_repetitions() -> None:
    old = "(≈ 35 ms here) takes about 55 ms instead of about 0.2 s; kernel ≈4\u201320 min, ~5 min"
    assert approximate_times(old) == [
        "≈ 35 ms",
        "about 55 ms",
        "about 0.2 s",
        "≈4\u201320 min",
        "~5 min",
    ]
    assert approximate_times("a 10 s connect timeout, 4 MiB at most, ~70 KB") == []
    assert approximate_times("fails on `≈ 25 ms` elsewhere") == []


def test_measured_times_live_in_performance_md() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [
        f"{doc.relative_to(ROOT)}:{number}: {figure}"
        for doc in docs
        if doc.name != "performance.md"
        for number, line in enumerate(doc.read_text().splitlines(), 1)
        for figure in approximate_times(line)
    ]
    assert not found, "move these figures to docs/performance.md and link there:\n" + "\n".join(
        found
    )
    assert approximate_times((ROOT / "docs" / "performance.md").read_text())
