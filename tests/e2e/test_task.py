"""`pyro task …` on real guests, with a fresh pyro process for every step.

The CLI runs as a subprocess each time, so nothing but the on-disk registry, journal and
the task's own disk carry state from one step to the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]
ENV = "debian:12"


def pyro(
    *args: str, timeout: float = 300, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        timeout=timeout,
        input=stdin if stdin is not None else b"",
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def ok(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = pyro(*args, **kwargs)
    assert proc.returncode == 0, f"pyro {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture
def created(pyro_state: Path) -> Iterator[list[str]]:
    """Ids of the tasks a test made; deleted at teardown even when the test failed."""
    ids: list[str] = []
    yield ids
    for task_id in ids:
        pyro("task", "delete", task_id)


@pytest.fixture
def create(guest_install: Any, created: list[str]) -> Callable[..., str]:
    def make(*args: str) -> str:
        task_id = ok("task", "create", ENV, "--id-only", *args).stdout.strip()
        assert len(task_id) == 12, task_id
        created.append(task_id)
        return task_id

    return make


def test_state_persists_across_processes_and_reset_restores_it(
    create: Callable[..., str], pyro_state: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    (seed / "src").mkdir(parents=True)
    (seed / "src" / "hello.txt").write_text("seeded\n")
    task_id = create("--seed-path", str(seed), "--name", "e2e", "--label", "suite=task")

    ok("task", "exec", task_id, "--", "sh", "-c", "echo persisted > state.txt")
    read = ok("task", "exec", task_id, "--", "cat", "state.txt", "src/hello.txt")
    assert read.stdout == "persisted\nseeded\n"

    logs = json.loads(ok("task", "logs", task_id, "--json").stdout)["entries"]
    assert [(e["seq"], e["exit_code"]) for e in logs] == [(1, 0), (2, 0)]
    assert logs[1]["argv"] == ["cat", "state.txt", "src/hello.txt"]
    assert logs[1]["cwd"] == "/workspace"

    ok("task", "snapshot", "create", task_id, "with-state")
    ok("task", "exec", task_id, "--", "sh", "-c", "rm -rf /workspace/*")
    gone = pyro("task", "exec", task_id, "--", "cat", "state.txt")
    assert gone.returncode == 1

    ok("task", "reset", task_id, "--snapshot", "with-state")
    assert ok("task", "exec", task_id, "--", "cat", "state.txt").stdout == "persisted\n"
    ok("task", "reset", task_id)  # to the baseline taken at create: seed, no state.txt
    listing = ok("task", "exec", task_id, "--", "ls", "-A", "/workspace").stdout
    assert listing.split() == ["src"]

    status = json.loads(ok("task", "status", task_id, "--json").stdout)["task"]
    assert status["state"] == "running" and status["command_count"] == 6
    assert status["snapshots"] == ["baseline", "with-state"]
    journal = json.loads(ok("task", "logs", task_id, "--json").stdout)["entries"]
    assert len(journal) == 6  # the journal survives resets: it lives on the host

    ok("task", "delete", task_id)
    missing = pyro("task", "status", task_id)
    assert missing.returncode == 1 and "no task with id" in missing.stderr
    assert "did not exist" in ok("task", "delete", task_id).stdout


def test_stop_start_boots_from_the_same_disk(create: Callable[..., str], pyro_state: Path) -> None:
    task_id = create()
    ok("task", "exec", task_id, "--", "sh", "-c", "echo kept > /workspace/k; echo root > /root/r")
    stopped = json.loads(ok("task", "stop", task_id, "--json").stdout)["task"]
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    ok("task", "start", task_id)
    assert ok("task", "exec", task_id, "--", "cat", "k", "/root/r").stdout == "kept\nroot\n"
    ok("task", "delete", task_id)


def test_a_secret_appears_nowhere_on_the_host(
    create: Callable[..., str], pyro_state: Path, tmp_path: Path
) -> None:
    secret = "s3cr3t-value-e2e-7f1b"
    secret_file = tmp_path / "token"
    secret_file.write_text(secret + "\n")
    task_id = create("--secret-file", f"TOKEN={secret_file}")
    secret_file.unlink()
    outputs = []
    proc = pyro(
        "task", "exec", task_id, "--secret-env", "TOKEN", "--",
        "sh", "-c", 'echo "token=$TOKEN"; echo "$TOKEN" >&2',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "token=[REDACTED:TOKEN]" in proc.stdout and "[REDACTED:TOKEN]" in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    # The guest really had it (the literal in argv is redacted from the journal too).
    check = pyro("task", "exec", task_id, "--secret-env", "TOKEN", "--",
                 "sh", "-c", f'test "$TOKEN" = "{secret}" && echo same')  # fmt: skip
    assert check.stdout == "same\n", check.stderr
    outputs.append(check.stdout + check.stderr)
    no_env = ok("task", "exec", task_id, "--", "sh", "-c", 'echo "[${TOKEN:-unset}]"')
    assert no_env.stdout == "[unset]\n"
    for args in (("logs", task_id), ("logs", task_id, "--json"), ("status", task_id, "--json"),
                 ("list", "--json"), ("vm", "logs", task_id)):  # fmt: skip
        outputs.append(ok("task", *args).stdout if args[0] != "vm" else pyro(*args).stdout)
    for text in outputs:
        assert secret not in text
    stored = pyro_state / "vms" / task_id / "secrets.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    found = subprocess.run(
        ["grep", "-rl", "--binary-files=text", secret, str(pyro_state)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert found.stdout.split() == [str(stored)], "only the 0600 secrets file may hold it"
    ok("task", "delete", task_id)


def test_two_tasks_do_not_see_each_other(create: Callable[..., str], pyro_state: Path) -> None:
    first, second = create(), create()
    ok("task", "exec", first, "--", "sh", "-c", "echo one > mine.txt")
    ok("task", "exec", second, "--", "sh", "-c", "echo two > mine.txt")
    assert ok("task", "exec", first, "--", "cat", "mine.txt").stdout == "one\n"
    assert ok("task", "exec", second, "--", "cat", "mine.txt").stdout == "two\n"
    assert ok("task", "logs", first, "--json").stdout.count('"seq"') == 2
    ids = [t["id"] for t in json.loads(ok("task", "list", "--json").stdout)["tasks"]]
    assert sorted(ids) == sorted([first, second])
    ok("task", "delete", first)
    ok("task", "delete", second)


def test_files_are_binary_safe_through_the_file_protocol(
    create: Callable[..., str], pyro_state: Path, tmp_path: Path
) -> None:
    task_id = create()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    ok("task", "file", "write", task_id, "dir/blob.bin", stdin=payload)
    raw = subprocess.run(
        [*PYRO, "task", "file", "read", task_id, "dir/blob.bin"], capture_output=True, timeout=300
    )
    assert raw.returncode == 0 and raw.stdout == payload
    tree = tmp_path / "tree"
    (tree / "a b").mkdir(parents=True)
    (tree / "a b" / 'quote\'d "name".txt').write_text("$(not run)\n")
    ok("task", "sync", "push", task_id, str(tree), "--dest", "/workspace/pushed")
    shown = ok("task", "exec", task_id, "--", "cat", '/workspace/pushed/a b/quote\'d "name".txt')
    assert shown.stdout == "$(not run)\n"
    listing = json.loads(ok("task", "file", "list", task_id, "dir", "--json").stdout)["entries"]
    assert [(e["name"], e["size"]) for e in listing] == [("blob.bin", len(payload))]
    ok("task", "export", task_id, "/workspace", "--output", str(tmp_path / "out"))
    assert (tmp_path / "out" / "dir" / "blob.bin").read_bytes() == payload
    assert (tmp_path / "out" / "pushed" / "a b" / 'quote\'d "name".txt').exists()
    ok("task", "delete", task_id)


def test_a_task_whose_vmm_died_shows_stopped_with_the_reason(
    create: Callable[..., str], pyro_state: Path
) -> None:
    task_id = create()
    pid = json.loads(ok("task", "status", task_id, "--json").stdout)["task"]["pid"]
    os.kill(pid, 9)
    status = json.loads(ok("task", "status", task_id, "--json").stdout)["task"]
    assert status["state"] == "stopped" and "exited unexpectedly" in status["reason"]
    # Its disk survived: the next exec boots it again.
    assert ok("task", "exec", task_id, "--", "ls", "/workspace").returncode == 0
    ok("task", "delete", task_id)


def test_what_a_finished_exec_wrote_survives_the_vmm_being_killed(
    create: Callable[..., str], pyro_state: Path
) -> None:
    # A cancelled or cut-off command leaves only a hard stop (the agent is busy), so every
    # finished exec's writes must already be on the task's disk, not in the guest's cache.
    task_id = create()
    ok("task", "exec", task_id, "--", "sh", "-c", "echo kept > f && seq 1 20000 > big")
    pid = json.loads(ok("task", "status", task_id, "--json").stdout)["task"]["pid"]
    os.kill(pid, 9)
    shown = ok("task", "exec", task_id, "--", "sh", "-c", "cat f; wc -l < big; tail -n1 big")
    assert shown.stdout == "kept\n20000\n20000\n"
    ok("task", "delete", task_id)


def test_bad_seed_is_refused_before_anything_boots(
    create: Callable[..., str], pyro_state: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    os.symlink("/etc/passwd", seed / "escape")
    proc = pyro("task", "create", ENV, "--seed-path", str(seed))
    assert proc.returncode == 2 and "points outside" in proc.stderr and "hint:" in proc.stderr
    assert json.loads(ok("task", "list", "--json").stdout)["tasks"] == []
