"""What users do with a guest, for bench/run.py: seed a workspace, copy a tree in, commit it.

The tree is the one issue 24 measures: one 64 MiB file of incompressible bytes plus 2,000
small text files in 40 folders. It is the same every time (seeded generator), so runs and
machines compare. ``python bench/workloads.py tree DIR`` writes it for other uses (tests,
measuring by hand).

Each figure comes with its baseline from the same run (bench/run.py divides the medians):

* ``seed64_s``            ``create_task(seed_path=TREE)`` until its first ``exec`` returned;
                          baseline ``floor_s`` (a raw QEMU boot to the agent's first exec)
* ``copyin64_s``          ``push_task_dir(id, TREE, dest=...)`` into a running task;
                          baseline ``host_cp64_s``: ``cp -a TREE DEST`` on the host
* ``git_commit_guest_s``  ``git add -A && git commit`` of the tree in a task's workspace
                          (``git init`` is not timed); baseline ``git_commit_host_s``: the
                          same commands on a copy of the tree on the host
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIG_BYTES = 64 << 20
SMALL_FILES = 2000
FOLDERS = 40
ENV = "debian:12"

# Git without the user's or the system's configuration, the same on the host and in the guest.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
GIT_INIT = "git init -q"
GIT_COMMIT = "git add -A && git commit -q -m bench"


@dataclass(frozen=True)
class Tree:
    """A written workload tree: where, how many regular files, how many bytes in them, and
    the size of its one big file (``data/blob.bin``)."""

    path: Path
    files: int
    bytes: int
    big_bytes: int


def write_tree(root: Path, *, big_bytes: int = BIG_BYTES, small_files: int = SMALL_FILES) -> Tree:
    """Write the workload tree into the (new or empty) folder ``root``."""
    rng = random.Random(24)
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    big = root / "data" / "blob.bin"
    big.parent.mkdir()
    with big.open("wb") as out:
        left = big_bytes
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            out.write(chunk)
            left -= len(chunk)
    total += big_bytes
    words = ["alpha", "beta", "gamma", "delta", "pyro", "guest", "host", "tree", "seed", "commit"]
    for index in range(small_files):
        folder = root / "src" / f"pkg{index % FOLDERS:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(rng.randint(10, 60))]
        text = f"# file {index}\n" + "\n".join(lines) + "\n"
        (folder / f"mod{index:04d}.txt").write_text(text)
        total += len(text.encode())
    os.sync()  # the tree's writeback is not timed as part of a figure
    return Tree(root, small_files + 1, total, big_bytes)


@contextmanager
def workload_tree(**kwargs: Any) -> Iterator[Tree]:
    """A workload tree in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pyro-bench-tree-") as tmp:
        yield write_tree(Path(tmp) / "tree", **kwargs)


def host_cp(tree: Tree, dest: Path) -> float:
    """Seconds of ``cp -a TREE DEST`` on the host (DEST is removed afterwards)."""
    os.sync()  # what earlier runs wrote is not flushed on this one's time
    begun = time.perf_counter()
    subprocess.run(["cp", "-a", str(tree.path), str(dest)], check=True)
    elapsed = time.perf_counter() - begun
    shutil.rmtree(dest)
    return elapsed


def host_git_commit(tree: Tree, work: Path) -> float:
    """Seconds of ``git add -A && git commit`` of a fresh copy of the tree on the host."""
    env = {**os.environ, **GIT_ENV}
    shutil.copytree(tree.path, work, symlinks=True)
    subprocess.run(GIT_INIT, shell=True, cwd=work, env=env, check=True)
    os.sync()
    begun = time.perf_counter()
    subprocess.run(GIT_COMMIT, shell=True, cwd=work, env=env, check=True)
    elapsed = time.perf_counter() - begun
    listed = subprocess.run(
        "git ls-files | wc -l", shell=True, cwd=work, env=env, check=True, capture_output=True
    )
    _check_committed(listed.stdout.decode(), tree, "host")
    shutil.rmtree(work)
    return elapsed


def seed_and_first_exec(pyro: Any, tree: Tree) -> float:
    """Seconds from ``create_task(seed_path=tree)`` to its first exec's return."""
    os.sync()
    begun = time.perf_counter()
    task = pyro.create_task(ENV, seed_path=tree.path)
    try:
        result = pyro.exec_task(task.id, ["true"])
        elapsed = time.perf_counter() - begun
        if result.exit_code != 0:
            raise SystemExit(f"bench: the seeded task's first exec failed: {result.stderr!r}")
        _check_seeded(pyro, task.id, tree, "/workspace")
    finally:
        pyro.delete_task(task.id)
    return elapsed


def copy_in(pyro: Any, tree: Tree, runs: int) -> tuple[list[float], list[float]]:
    """``push_task_dir`` of the tree into a running task, to a fresh folder per run, and
    its host baseline ``cp -a``, alternating: (guest samples, host samples)."""
    task = pyro.create_task(ENV)
    guest, host = [], []
    try:
        pyro.exec_task(task.id, ["true"])
        with tempfile.TemporaryDirectory(prefix="pyro-bench-cp-") as tmp:
            for run in range(runs):
                host.append(host_cp(tree, Path(tmp) / "copy"))
                dest = f"/tmp/copy{run}"
                os.sync()
                begun = time.perf_counter()
                pyro.push_task_dir(task.id, tree.path, dest=dest)
                guest.append(time.perf_counter() - begun)
                _check_seeded(pyro, task.id, tree, dest)
                pyro.exec_task(task.id, ["rm", "-rf", dest])
    finally:
        pyro.delete_task(task.id)
    return guest, host


def git_commit(pyro: Any, tree: Tree, runs: int) -> tuple[list[float], list[float]]:
    """``git add -A && git commit`` of the tree in a task's workspace and on the host,
    alternating: (guest samples, host samples). The guest's is timed inside the guest
    (``date +%s%N`` around the commands: no exec round trip in the figure)."""
    script = (
        f"rm -rf .git && {GIT_INIT} && sync && s=$(date +%s%N) && {GIT_COMMIT} "
        '&& e=$(date +%s%N) && echo "$((e - s))" && git ls-files | wc -l'
    )
    task = pyro.create_task(ENV, seed_path=tree.path)
    guest, host = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="pyro-bench-git-") as tmp:
            for _ in range(runs):
                host.append(host_git_commit(tree, Path(tmp) / "work"))
                os.sync()
                result = pyro.exec_task(task.id, script, env=GIT_ENV, timeout_seconds=600)
                if result.exit_code != 0:
                    raise SystemExit(f"bench: git in the guest failed: {result.stderr!r}")
                elapsed, listed = result.stdout.split()[-2:]
                _check_committed(listed, tree, "guest")
                guest.append(int(elapsed) / 1e9)
    finally:
        pyro.delete_task(task.id)
    return guest, host


def _check_committed(listed: str, tree: Tree, where: str) -> None:
    if int(listed.strip() or 0) != tree.files:
        raise SystemExit(
            f"bench: the {where} commit holds {listed.strip()} files, not {tree.files}"
        )


def _check_seeded(pyro: Any, task_id: str, tree: Tree, dest: str) -> None:
    """The guest holds as many files and bytes under ``dest`` as the tree."""
    result = pyro.exec_task(
        task_id, f"find {dest} -type f | wc -l; du -sb --apparent-size {dest}/data/blob.bin"
    )
    lines = result.stdout.split()
    if result.exit_code != 0 or int(lines[0]) < tree.files or int(lines[1]) != tree.big_bytes:
        raise SystemExit(f"bench: the copied tree is incomplete: {result.stdout!r}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "tree":
        raise SystemExit("usage: python bench/workloads.py tree DIR")
    written = write_tree(Path(sys.argv[2]))
    print(f"{written.path}: {written.files} files, {written.bytes} bytes")
