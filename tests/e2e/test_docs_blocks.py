"""Every console/shell block of README.md and docs/*.md runs as written (docs/writing-docs.md).

One case per block, id ``FILE:LINE``. A block that cannot run here carries
``<!-- docs-test: skip (reason) -->``: it gets no case (the suite's skip count stays for
tests that could not run), and :func:`test_markers_are_well_formed` insists on the reason.
Blocks that boot guests carry ``<!-- docs-test: guest -->`` and run under ``guest``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers.docblocks import Block, load_docs
from helpers.docrun import block_env, check_listing, prepare_workdir, pyro_bin, run_block

ROOT = Path(__file__).parents[2]
DOCS = load_docs(ROOT)


def _params() -> list[Any]:
    params = []
    for doc in DOCS.values():
        for block in doc.blocks:
            if block.marker("skip"):
                continue
            marks: list[Any] = [pytest.mark.guest] if block.marker("guest") else []
            if block.runs or block.marker("file"):
                params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def test_markers_are_well_formed() -> None:
    problems = [p for doc in DOCS.values() for p in doc.problems]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", _params())
def test_block_runs_as_written(
    block: Block, request: pytest.FixtureRequest, tmp_path: Path, pyro_state: Path
) -> None:
    if block.marker("file"):
        problems = check_listing(block, ROOT)
        assert not problems, "\n".join(problems)
        return
    if block.marker("guest"):
        request.getfixturevalue("guest_install")
    work = tmp_path / "work"
    prepare_workdir(ROOT, work)
    env = block_env(ROOT, pyro_bin(tmp_path / "bin"), dict(os.environ))
    problems = run_block(block, work, env)
    assert not problems, "\n\n".join(problems)
