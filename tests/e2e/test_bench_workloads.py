"""bench/workloads.py on a real guest, with a small tree: the seed, the copy-in and the
guest's git commit check what they measured (every file arrived, every file committed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pyro.sdk import Pyro

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import workloads

pytestmark = pytest.mark.guest


def test_workloads_seed_copy_and_commit_a_small_tree(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    pyro = Pyro(state_dir=pyro_state)
    tree = workloads.write_tree(tmp_path / "tree", big_bytes=1 << 20, small_files=120)
    assert workloads.seed_and_first_exec(pyro, tree) > 0
    guest, host = workloads.copy_in(pyro, tree, 2)
    assert len(guest) == len(host) == 2 and min(guest + host) > 0
    guest, host = workloads.git_commit(pyro, tree, 1)
    assert len(guest) == len(host) == 1 and min(guest + host) > 0
    assert pyro.list_tasks() == []  # every task it made is deleted


def test_a_short_copy_is_caught(guest_install: Any, pyro_state: Path, tmp_path: Path) -> None:
    pyro = Pyro(state_dir=pyro_state)
    tree = workloads.write_tree(tmp_path / "tree", big_bytes=4096, small_files=5)
    task = pyro.create_task(workloads.ENV, seed_path=tree.path)
    try:
        pyro.exec_task(task.id, "rm /workspace/data/blob.bin")
        with pytest.raises(SystemExit, match="incomplete"):
            workloads._check_seeded(pyro, task.id, tree, "/workspace")
    finally:
        pyro.delete_task(task.id)
