"""A task's seed by data disk (pyro.machines.datadisk) on real guests: the same tree as
through the agent, the same refusals, the disk kept and mounted again across stop/start
and resets, and nothing left after delete or a killed ``task create``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.guest import vmm_processes

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]
ENV = "debian:12"
BY_DISK = {"PYRO_DATA_DISK_MIN_BYTES": "0"}
BY_AGENT = {"PYRO_DATA_DISK_MIN_BYTES": str(1 << 40)}
#: Every entry under /workspace: path, type, mode, owner, group, link target; file sizes.
#: (Not a symlink's own mode bits, which Linux ignores and tar-free copies do not keep.)
LISTING = (
    "cd /workspace && find . \\( -type l -printf '%p %y %u %g %l\\n' \\) "
    "-o -printf '%p %y %m %u %g\\n' | sort && "
    "find . -type f -printf '%p %s\\n' | sort && mount | grep -c ' /workspace ' || true"
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
def create(guest_install: Any, pyro_state: Path) -> Iterator[Callable[..., str]]:
    ids: list[str] = []

    def make(seed: Path, env: dict[str, str]) -> str:
        task_id = ok("task", "create", ENV, "--id-only", "--seed-path", str(seed), env=env)
        ids.append(task_id.strip())
        return task_id.strip()

    yield make
    for task_id in ids:
        pyro("task", "delete", task_id)


def _seed(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    (seed / "src" / "deep" / "er").mkdir(parents=True)
    (seed / "private").mkdir(mode=0o700)
    (seed / "empty").mkdir()
    (seed / "src" / "a.txt").write_text("alpha\n")
    os.chmod(seed / "src" / "a.txt", 0o640)
    (seed / "src" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(seed / "src" / "run.sh", 0o755)
    (seed / "src" / "suid").write_bytes(b"x")
    os.chmod(seed / "src" / "suid", 0o4755)
    (seed / "src" / "deep" / "er" / "with space.txt").write_bytes(b"")
    (seed / "private" / "key").write_bytes(os.urandom(3 << 20))
    os.symlink("src/a.txt", seed / "rel-link")
    os.symlink(str(seed / "src" / "run.sh"), seed / "abs-link")  # inside: made relative
    os.symlink("src", seed / "dir-link")
    os.mkfifo(seed / "fifo")  # special files are skipped on both paths
    return seed


def test_a_seed_by_disk_is_the_seed_through_the_agent(
    create: Callable[..., str], pyro_state: Path, tmp_path: Path
) -> None:
    seed = _seed(tmp_path)
    by_agent = create(seed, BY_AGENT)
    by_disk = create(seed, BY_DISK)
    assert not (pyro_state / "vms" / by_agent / "workspace.img").exists()
    assert (pyro_state / "vms" / by_disk / "workspace.img").is_file()

    seen_agent = ok("task", "exec", by_agent, "--", "sh", "-c", LISTING)
    seen_disk = ok("task", "exec", by_disk, "--", "sh", "-c", LISTING)
    assert seen_disk.rsplit("\n", 2)[-2] == "1"  # the workspace is the overlay
    assert seen_agent.rsplit("\n", 2)[-2] == "0"
    assert seen_disk.rsplit("\n", 2)[0] == seen_agent.rsplit("\n", 2)[0]
    lines = seen_disk.splitlines()
    assert "./src/suid f 4755 root root" in lines
    assert "./src/a.txt f 640 root root" in lines
    assert "./private d 755 root root" in lines  # folders are 0755, as mkdir -p makes them
    assert "./abs-link l root root src/run.sh" in lines
    assert "./dir-link l root root src" in lines
    assert not any(line.startswith(("./fifo", "./lost+found")) for line in lines)

    digest = hashlib.sha256((seed / "private" / "key").read_bytes()).hexdigest()
    inside = ok("task", "exec", by_disk, "--", "sha256sum", "private/key")
    assert inside.split()[0] == digest
    assert ok("task", "exec", by_disk, "--", "./abs-link") == "ran\n"
    status = json.loads(ok("task", "status", by_disk, "--json"))["task"]
    assert status["seed"]["files"] == 5 and status["seed"]["symlinks"] == 3
    sizes = [p.stat().st_size for p in seed.rglob("*") if p.is_file() and not p.is_symlink()]
    assert status["seed"]["bytes"] == sum(sizes)
    assert status["seed"]["skipped"] == ["fifo"]
    assert status["disk_bytes"] >= 3 << 20  # the image counts as the task's disk


def test_refusals_hold_by_disk(guest_install: Any, pyro_state: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    os.symlink("/etc/passwd", seed / "escape")
    proc = pyro("task", "create", ENV, "--seed-path", str(seed), env=BY_DISK)
    assert proc.returncode == 2 and "points outside" in proc.stderr
    os.unlink(seed / "escape")
    (seed / "big").write_bytes(b"\0" * (2 << 20))
    proc = pyro(
        "task", "create", ENV, "--seed-path", str(seed),
        env={**BY_DISK, "PYRO_TASK_SEED_MAX_MB": "1"},
    )  # fmt: skip
    assert proc.returncode != 0 and "more than 1 MiB" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(ok("task", "list", "--json"))["tasks"] == []
    assert not vmm_processes(str(pyro_state))


def test_the_disk_is_mounted_again_after_stop_and_reset(
    create: Callable[..., str], pyro_state: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    (seed / "src").mkdir(parents=True)
    (seed / "src" / "hello.txt").write_text("seeded\n")
    task_id = create(seed, BY_DISK)
    ok("task", "exec", task_id, "--", "sh", "-c", "echo changed > src/hello.txt; echo new > n")
    ok("task", "exec", task_id, "--", "mv", "src", "moved")  # a folder of the lower layer
    ok("task", "stop", task_id)
    read = ok("task", "exec", task_id, "--", "cat", "moved/hello.txt", "n")
    assert read == "changed\nnew\n"
    ok("task", "stop", task_id)
    ok("task", "reset", task_id)  # the baseline: the seed as it came
    assert ok("task", "exec", task_id, "--", "cat", "src/hello.txt") == "seeded\n"
    assert ok("task", "exec", task_id, "--", "ls", "-A").split() == ["src"]
    ok("task", "stop", task_id)
    image = pyro_state / "vms" / task_id / "workspace.img"
    image.rename(image.with_name("moved.img"))
    lost = pyro("task", "exec", task_id, "--", "true")
    assert lost.returncode != 0 and "lost the data disk" in lost.stderr
    assert "Traceback" not in lost.stderr
    image.with_name("moved.img").rename(image)
    ok("task", "delete", task_id)
    assert not (pyro_state / "vms" / task_id).exists()


def test_a_killed_create_leaves_nothing_after_delete(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "blob").write_bytes(os.urandom(8 << 20))
    child = subprocess.Popen(
        [*PYRO, "task", "create", ENV, "--seed-path", str(seed)],
        env={**os.environ, **BY_DISK},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = f"pyro-stage-{child.pid}-*"  # killed while it stages, when /dev/shm has room
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(Path("/dev/shm").glob(staging)):
        if child.poll() is not None:
            break
        time.sleep(0.005)
    assert list(pyro_state.glob("vms/*/workspace.img")), "the image was never made"
    child.send_signal(signal.SIGKILL)
    child.wait()
    tasks = json.loads(ok("task", "list", "--json"))["tasks"]  # reaps a staging copy left
    assert not list(Path("/dev/shm").glob(staging))
    for task in tasks:
        ok("task", "delete", task["id"])
    deadline = time.monotonic() + 10
    while vmm_processes(str(pyro_state)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not vmm_processes(str(pyro_state))
    assert not list(pyro_state.glob("vms/*"))


def test_files_of_a_user_are_given_to_root_in_the_guest(
    guest_install: Any, pyro_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyro not run as root: the image holds the user's owners (here made so by changing
    the staged files' owner), and the guest gives them to root, keeping setuid bits."""
    from pyro.machines import datadisk
    from pyro.machines.registry import VMRegistry
    from pyro.tasks import ops
    from pyro.tasks.manager import TaskManager

    stage = datadisk.ImageBuild._stage

    def as_a_user(self: datadisk.ImageBuild) -> None:
        stage(self)
        for folder, dirs, files in os.walk(self._staging):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(folder, name), 1000, 1000)
        os.lchown(self._staging, 1000, 1000)
        self.user_owned = True

    if os.geteuid() != 0:
        pytest.skip("needs root to hand the staged files to another user")
    monkeypatch.setattr(datadisk.ImageBuild, "_stage", as_a_user)
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", "0")
    seed = _seed(tmp_path)
    manager = TaskManager(VMRegistry(pyro_state))
    info = ops.create(manager, ENV, ops.TaskCreateOptions(seed_path=str(seed)), {})
    try:
        out = ops.exec_command(manager, info.id, ["sh", "-c", LISTING])
        lines = out.stdout.splitlines()
        assert "./src/suid f 4755 root root" in lines
        assert "./abs-link l root root src/run.sh" in lines
        assert not [line for line in lines if " 1000 " in line]
    finally:
        manager.delete(info.id)
