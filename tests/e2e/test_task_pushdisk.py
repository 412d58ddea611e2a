"""``sync push`` into a running task by its spare disk (pyro.machines.pushdisk) on real
guests: the same tree as through the agent (owners, modes, symlinks, replaced files, kept
folders), the same refusals, and the spare usable again after a push, a stop and a pause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]
ENV = "debian:12"
BY_DISK = {"PYRO_DATA_DISK_MIN_BYTES": "0"}
BY_AGENT = {"PYRO_DATA_DISK_MIN_BYTES": str(1 << 40)}
#: Every entry under the folder: path, type, mode, owner, group, link target; file sizes.
LISTING = (
    "cd \"$1\" && find . \\( -type l -printf '%p %y %u %g %l\\n' \\) "
    "-o -printf '%p %y %m %u %g\\n' | sort && find . -type f -printf '%p %s\\n' | sort"
)
#: The spare's size in the guest (0: empty again after a push).
LEFT = (
    'for b in /sys/block/vd*; do read -r s < $b/serial; [ "$s" = pyro-push ] && cat $b/size;'
    " done; true"
)


def pyro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    proc = pyro(*args, env=env)
    assert proc.returncode == 0, f"pyro {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.fixture
def task(guest_install: Any, pyro_state: Path) -> Iterator[str]:
    task_id = ok("task", "create", ENV, "--id-only").strip()
    yield task_id
    pyro("task", "delete", task_id)


def _tree(root: Path, text: str) -> Path:
    (root / "src" / "deep").mkdir(parents=True)
    (root / "keep").mkdir()
    (root / "src" / "a.txt").write_text(text)
    os.chmod(root / "src" / "a.txt", 0o640)
    (root / "src" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(root / "src" / "run.sh", 0o755)
    (root / "src" / "suid").write_bytes(b"x")
    os.chmod(root / "src" / "suid", 0o4755)
    (root / "src" / "deep" / "with space.txt").write_bytes(os.urandom(1 << 20))
    os.symlink("src/a.txt", root / "rel-link")
    os.symlink(str(root / "src" / "run.sh"), root / "abs-link")  # inside: made relative
    os.mkfifo(root / "fifo")  # skipped on both paths
    return root


def _listing(task_id: str, folder: str) -> list[str]:
    return ok("task", "exec", task_id, "--", "sh", "-c", LISTING, "sh", folder).splitlines()


#: The destination before a push: a file the push replaces (another mode), a folder it
#: keeps (another mode), and a file it leaves alone.
BEFORE = "mkdir -p $1/keep $1/src && chmod 700 $1/keep && echo old > $1/src/a.txt && "
BEFORE += "chmod 666 $1/src/a.txt && echo mine > $1/mine"


def test_a_push_by_disk_is_the_push_through_the_agent(
    task: str, pyro_state: Path, tmp_path: Path
) -> None:
    tree = _tree(tmp_path / "tree", "alpha\n")
    for folder in ("/workspace/agent", "/workspace/disk"):
        ok("task", "exec", task, "--", "sh", "-c", BEFORE, "sh", folder)
    ok("task", "sync", "push", task, str(tree), "--dest", "/workspace/agent", env=BY_AGENT)
    assert _swaps(task) == 0  # the agent path never touches the spare
    pushed = ok(
        "task", "sync", "push", task, str(tree), "--dest", "/workspace/disk", "--json",
        env=BY_DISK,
    )  # fmt: skip
    assert json.loads(pushed)["files"] == 4
    assert json.loads(pushed)["bytes"] == sum(
        p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert _swaps(task) == 2  # the image in, the empty file back
    by_agent, by_disk = _listing(task, "/workspace/agent"), _listing(task, "/workspace/disk")
    assert by_disk == by_agent
    assert "./src/a.txt f 640 root root" in by_disk  # replaced, with the walk's mode
    assert "./keep d 700 root root" in by_disk  # an existing folder keeps its mode
    assert "./src/suid f 4755 root root" in by_disk
    assert "./abs-link l root root src/run.sh" in by_disk
    assert "./mine f 644 root root" in by_disk
    assert not any(line.startswith(("./fifo", "./lost+found")) for line in by_disk)
    assert ok("task", "exec", task, "--", "sh", "-c", LEFT).split() == ["0"]
    folder = pyro_state / "vms" / task
    assert not (folder / "push.tar").exists() and (folder / "spare.img").stat().st_size == 0

    # Again after a push, a stop (cold boot) and a pause (resume): new bytes arrive each time.
    for step, text in (("", "beta\n"), ("stop", "gamma\n"), ("pause", "delta\n")):
        if step:
            ok("task", step, task)
        (tree / "src" / "a.txt").write_text(text)
        ok("task", "sync", "push", task, str(tree), "--dest", "/workspace/disk", env=BY_DISK)
        assert (
            ok("task", "exec", task, "--", "cat", "disk/src/a.txt", "disk/mine") == f"{text}mine\n"
        )
    digest = ok("task", "exec", task, "--", "sha256sum", "disk/src/deep/with space.txt")
    assert digest.split()[0] == _sha256(tree / "src" / "deep" / "with space.txt")


def test_refusals_hold_by_disk(task: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink("/etc/passwd", tree / "escape")
    proc = pyro("task", "sync", "push", task, str(tree), env=BY_DISK)
    assert proc.returncode == 2 and "points outside" in proc.stderr
    os.unlink(tree / "escape")
    (tree / "big").write_bytes(b"\0" * (2 << 20))
    proc = pyro(
        "task", "sync", "push", task, str(tree), env={**BY_DISK, "PYRO_TASK_SEED_MAX_MB": "1"}
    )
    assert proc.returncode != 0 and "more than 1 MiB" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ok("task", "exec", task, "--", "ls", "-A", "/workspace") == ""


def _swaps(task_id: str) -> int:
    """How often the guest's kernel saw the spare disk change its capacity."""
    dmesg = ok("task", "exec", task_id, "--", "dmesg")
    return sum("detected capacity change" in line for line in dmesg.splitlines())


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
