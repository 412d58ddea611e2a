"""Task state on real guests: pause/resume with memory, fork.

The pause tests check process state, not files: a background ``sleep 1000`` keeps its pid
and a counter in a guest process keeps counting across the pause, and the CLI steps run
as separate pyro processes (a paused task outlives the process that paused it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import StateError
from pyro.sdk import Pyro
from tests.e2e.test_task import ok, pyro

pytestmark = pytest.mark.guest

ENV = "debian:12"
#: A counter process and a sleeper, both detached from the exec that starts them; prints
#: the sleeper's pid.
BACKGROUND = (
    "setsid nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'"
    " >/dev/null 2>&1 & setsid nohup sleep 1000 >/dev/null 2>&1 & echo $!"
)

#: Prints the /proc entry of every ``sleep 1000``.
SLEEPERS = (
    "for f in /proc/[0-9]*/cmdline; do "
    "[ \"$(tr '\\0' ' ' < $f 2>/dev/null)\" = 'sleep 1000 ' ] && echo $f; done; true"
)


@pytest.fixture
def sdk(guest_install: Any, pyro_state: Path) -> Iterator[Pyro]:
    yield Pyro(state_dir=pyro_state)


def _cmdline(pyro_: Pyro, task_id: str, pid: str) -> str:
    out = pyro_.exec_task(task_id, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    return out.stdout.strip()


def _count(pyro_: Pyro, task_id: str) -> int:
    return int(pyro_.read_task_file(task_id, "/tmp/count").decode().strip() or 0)


def test_pause_and_resume_keep_processes_memory_and_set_the_clock(
    guest_install: Any, pyro_state: Path
) -> None:
    task_id = ok("task", "create", ENV, "--id-only").stdout.strip()
    try:
        pid = ok("task", "exec", task_id, "--", BACKGROUND).stdout.split()[0]
        sdk = Pyro(state_dir=pyro_state)
        time.sleep(0.6)
        before = _count(sdk, task_id)

        paused = json.loads(ok("task", "pause", task_id, "--json").stdout)["task"]
        assert paused["state"] == "paused"
        assert paused["pid"] is None and paused["memory_file_bytes"] > 1 << 20
        folder = pyro_state / "vms" / task_id
        assert (folder / "memory.ram").is_file() and (folder / "paused.state").is_file()
        listed = json.loads(ok("task", "list", "--json").stdout)["tasks"]
        assert [t["state"] for t in listed if t["id"] == task_id] == ["paused"]
        time.sleep(2)  # the guest clock must not lag behind by the pause

        resumed = json.loads(ok("task", "resume", task_id, "--json").stdout)["task"]
        assert resumed["state"] == "running" and resumed["pid"]
        assert not (folder / "paused.state").exists()
        assert _cmdline(sdk, task_id, pid) == "sleep 1000"
        first = _count(sdk, task_id)
        assert first >= before
        time.sleep(1)
        assert _count(sdk, task_id) > first  # the counter runs on
        guest_now = float(sdk.exec_task(task_id, "date +%s.%N").stdout)
        assert abs(guest_now - time.time()) < 2.0
    finally:
        pyro("task", "delete", task_id)
    assert not (pyro_state / "vms" / task_id).exists()


def test_exec_resumes_a_paused_task_and_stop_discards_its_memory(sdk: Pyro) -> None:
    task = sdk.create_task(ENV)
    try:
        pid = sdk.exec_task(task.id, BACKGROUND).stdout.split()[0]
        sdk.pause_task(task.id)
        assert sdk.pause_task(task.id).state == "paused"  # pausing again changes nothing
        assert _cmdline(sdk, task.id, pid) == "sleep 1000"  # exec resumed it
        assert sdk.status_task(task.id).state == "running"

        sdk.exec_task(task.id, "echo kept > /workspace/f")
        sdk.pause_task(task.id)  # a second pause of a resumed guest
        folder = sdk.tasks.dir(task.id)
        stopped = sdk.stop_task(task.id)
        assert stopped.state == "stopped" and stopped.memory_file_bytes == 0
        assert not (folder / "memory.ram").exists() and not (folder / "paused.state").exists()
        with pytest.raises(StateError, match="stopped"):
            sdk.pause_task(task.id)
        # A cold boot from the disk: the files are there, the processes are not.
        assert sdk.read_task_file(task.id, "/workspace/f") == b"kept\n"
        gone = sdk.exec_task(task.id, f"test -e /proc/{pid}/cmdline && cat /proc/{pid}/cmdline")
        assert "sleep" not in gone.stdout
    finally:
        sdk.delete_task(task.id)


def test_the_idle_timeout_pauses_when_asked(sdk: Pyro) -> None:
    task = sdk.create_task(ENV, idle_timeout_seconds=1, idle_action="pause")
    try:
        pid = sdk.exec_task(task.id, BACKGROUND).stdout.split()[0]
        time.sleep(2.5)
        status = sdk.status_task(task.id)  # reaps idle tasks first
        assert status.state == "paused" and status.idle_action == "pause"
        assert _cmdline(sdk, task.id, pid) == "sleep 1000"
    finally:
        sdk.delete_task(task.id)


def test_bad_pause_requests_are_clear_errors(guest_install: Any, pyro_state: Path) -> None:
    proc = pyro("task", "pause", "nosuchtask")
    assert proc.returncode != 0 and "no task with id" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = pyro("task", "create", ENV, "--idle-action", "sleep")
    assert proc.returncode != 0 and "sleep" in proc.stderr and "Traceback" not in proc.stderr


def _identity(sdk: Pyro, task_id: str) -> tuple[str, str, str]:
    out = sdk.exec_task(task_id, "hostname; cat /etc/machine-id; od -An -tx1 -N16 /dev/urandom")
    lines = out.stdout.split("\n")
    return lines[0], lines[1], " ".join(lines[2:]).strip()


def _backing_chain(disk: Path) -> list[str]:
    import subprocess

    proc = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(disk)],
        capture_output=True,
        check=True,
    )
    return [image["filename"] for image in json.loads(proc.stdout)]


def test_a_fork_of_a_running_task_keeps_its_processes_and_gets_its_own_identity(
    guest_install: Any, pyro_state: Path
) -> None:
    sdk = Pyro(state_dir=pyro_state)
    source = sdk.create_task(ENV)
    forks: list[str] = []
    try:
        pid = sdk.exec_task(source.id, BACKGROUND).stdout.split()[0]
        sdk.exec_task(source.id, "echo from-source > /workspace/a")
        fork_id = ok("task", "fork", source.id, "--name", "alt", "--id-only").stdout.strip()
        forks.append(fork_id)
        fork = sdk.status_task(fork_id)
        assert fork.state == "running" and fork.name == "alt" and fork.forked_from == source.id
        # The processes went on in the fork, and still run in the source.
        for task_id in (fork_id, source.id):
            assert _cmdline(sdk, task_id, pid) == "sleep 1000"
            first = _count(sdk, task_id)
            time.sleep(0.8)
            assert _count(sdk, task_id) > first
        assert sdk.read_task_file(fork_id, "/workspace/a") == b"from-source\n"
        # They part ways from here: each has its own disk and identity.
        sdk.exec_task(fork_id, "echo from-fork > /workspace/a")
        assert sdk.read_task_file(source.id, "/workspace/a") == b"from-source\n"
        host_s, id_s, rng_s = _identity(sdk, source.id)
        host_f, id_f, rng_f = _identity(sdk, fork_id)
        assert host_f == f"pyro-{fork_id}" and host_f != host_s
        assert len(id_f) == 32 and id_f != id_s
        assert rng_f != rng_s

        # A paused source forks too, and stays paused.
        sdk.pause_task(source.id)
        second = sdk.fork_task(source.id)
        forks.append(second.id)
        assert sdk.status_task(source.id).state == "paused"
        assert _cmdline(sdk, second.id, pid) == "sleep 1000"

        # Deleting the source breaks no fork: their disks never name its folder.
        sdk.delete_task(source.id)
        for task_id in forks:
            chain = _backing_chain(pyro_state / "vms" / task_id / "overlay.qcow2")
            assert not any(source.id in name for name in chain), chain
            sdk.stop_task(task_id)
            assert sdk.exec_task(task_id, "cat /workspace/a").exit_code == 0
        assert sdk.exec_task(fork_id, "hostname").stdout.strip() == f"pyro-{fork_id}"
    finally:
        for task_id in [source.id, *forks]:
            sdk.delete_task(task_id)


def test_several_forks_of_one_snapshot_at_once(guest_install: Any, pyro_state: Path) -> None:
    import concurrent.futures

    sdk = Pyro(state_dir=pyro_state)
    source = sdk.create_task(ENV)
    forks: list[str] = []
    try:
        sdk.exec_task(source.id, "echo snap > /workspace/v; sleep 1000 >/dev/null 2>&1 &")
        sdk.create_task_snapshot(source.id, "s1")
        sdk.exec_task(source.id, "echo later > /workspace/v")
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(sdk.fork_task, source.id, snapshot="s1") for _ in range(3)]
            forks = [f.result().id for f in futures]
        assert len(set(forks)) == 3
        for task_id in forks:
            assert sdk.read_task_file(task_id, "/workspace/v") == b"snap\n"
            assert sdk.status_task(task_id).snapshots == ["baseline"]
            # A snapshot holds no memory: the fork booted cold.
            out = sdk.exec_task(task_id, SLEEPERS)
            assert out.stdout.strip() == ""
        assert sdk.exec_task(source.id, SLEEPERS).stdout.strip() != ""
        assert sdk.read_task_file(source.id, "/workspace/v") == b"later\n"
        assert len({_identity(sdk, t)[1] for t in forks}) == 3
        proc = pyro("task", "fork", source.id, "--from", "nosuch")
        assert proc.returncode != 0 and "no snapshot named 'nosuch'" in proc.stderr
        assert "s1" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        for task_id in [source.id, *forks]:
            sdk.delete_task(task_id)


def test_pause_resume_and_fork_over_mcp_stdio(guest_install: Any, pyro_state: Path) -> None:
    import anyio
    from mcp import Client

    from tests.e2e.test_mcp_surface_stdio import serve

    async def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(serve("full"), mode="legacy") as client:

            async def call(tool: str, **arguments: Any) -> Any:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, (tool, result.content)
                return result.structured_content

            task_id = (await call("task_create", environment=ENV))["id"]
            try:
                out["pid"] = (await call("task_exec", task_id=task_id, command=BACKGROUND))[
                    "stdout"
                ].split()[0]
                out["paused"] = await call("task_pause", task_id=task_id)
                out["resumed"] = await call("task_resume", task_id=task_id)
                out["fork"] = await call("task_fork", task_id=task_id, name="mcp-fork")
                cmdline = f"tr '\\0' ' ' < /proc/{out['pid']}/cmdline"
                fork_id = out["fork"]["id"]
                out["in_fork"] = (await call("task_exec", task_id=fork_id, command=cmdline))[
                    "stdout"
                ]
                bad = await client.call_tool("task_fork", {"task_id": task_id, "snapshot": "x"})
                out["bad"] = bad.content[0].text if bad.is_error else None
                await call("task_exec", task_id=fork_id, command="echo a > /workspace/f")
                out["diff"] = await call("task_diff", task_id=fork_id)
                patch = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"
                out["patch"] = await call("task_patch", task_id=fork_id, patch=patch)
                out["again"] = await call("task_patch", task_id=fork_id, patch=patch)
                out["status"] = await call("task_status", task_id=fork_id)
                await call("task_delete", task_id=fork_id)
            finally:
                await call("task_delete", task_id=task_id)
        return out

    out = anyio.run(session)
    assert out["paused"]["state"] == "paused"
    assert out["resumed"]["state"] == "running"
    assert out["fork"]["state"] == "running" and out["fork"]["name"] == "mcp-fork"
    assert out["in_fork"].strip() == "sleep 1000"
    assert out["bad"] is not None and "no snapshot named 'x'" in out["bad"]
    assert [c["path"] for c in out["diff"]["changes"]] == ["f"]
    assert "+++ b/f\n@@ -0,0 +1 @@\n+a\n" in out["diff"]["diff"]
    assert out["patch"]["applied"] is True and out["patch"]["files"] == ["/workspace/f"]
    assert out["again"]["applied"] is False and out["again"]["failed"][0]["hunk"] == 1
    usage = out["status"]["usage"]
    assert usage["vmm_memory_bytes"] > 0 and usage["guest_memory_total_bytes"] > 0
    assert 0 < usage["guest_disk_used_bytes"] < usage["guest_disk_total_bytes"]


def test_file_reads_of_a_stopped_or_paused_task_do_not_boot_it(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    sdk = Pyro(state_dir=pyro_state)
    task = sdk.create_task(ENV)
    try:
        sdk.exec_task(task.id, "mkdir -p d && echo one > d/f && ln -s /etc/shadow d/out")
        sdk.exec_task(task.id, "setsid nohup sh -c 'echo late > /workspace/late' &")
        time.sleep(0.5)
        sdk.pause_task(task.id)  # syncs first: the background write is on the disk
        assert sdk.read_task_file(task.id, "d/f") == b"one\n"
        assert sdk.read_task_file(task.id, "late") == b"late\n"
        assert sdk.status_task(task.id).state == "paused"
        sdk.stop_task(task.id)
        names = {e.name: e.kind for e in sdk.list_task_files(task.id, "d")}
        assert names == {"f": "file", "out": "symlink"}
        out = ok("task", "file", "read", task.id, "d/f").stdout
        assert out == "one\n"
        result = sdk.export_task_path(task.id, "/workspace", tmp_path / "exp")
        assert (tmp_path / "exp" / "d" / "f").read_text() == "one\n"
        assert not (tmp_path / "exp" / "d" / "out").exists() and result.skipped
        proc = pyro("task", "file", "read", task.id, "d/out")
        assert proc.returncode != 0 and "symlink" in proc.stderr and "Traceback" not in proc.stderr
        status = sdk.status_task(task.id)
        assert status.state == "stopped" and status.pid is None  # never booted
        assert status.usage is None  # a stopped task costs only its disk
        assert status.command_count == 2
    finally:
        sdk.delete_task(task.id)


def test_diff_since_the_baseline_and_a_snapshot_then_patch_all_or_nothing(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "app.py").write_text("print('one')\nprint('two')\n")
    (seed / "old.txt").write_text("bye\n")
    sdk = Pyro(state_dir=pyro_state)
    task = sdk.create_task(ENV, seed_path=seed)
    try:
        sdk.exec_task(
            task.id,
            "sed -i s/two/TWO/ app.py && rm old.txt && echo hi > new.txt"
            " && printf '\\0\\1' > blob && chmod 755 app.py && ln -s app.py link",
        )
        result = sdk.diff_task(task.id)
        by_path = {c.path: c.status for c in result.changes}
        assert by_path == {
            "app.py": "modified",
            "old.txt": "removed",
            "new.txt": "added",
            "blob": "added",
            "link": "added",
        }
        assert "-print('two')\n+print('TWO')\n" in result.diff
        assert "--- a/old.txt\n+++ /dev/null\n" in result.diff
        assert "added binary file blob\n" in result.diff
        assert "mode 644 -> 755 app.py\n" in result.diff
        assert "added symlink link -> app.py\n" in result.diff
        assert (result.insertions, result.deletions) == (2, 2)

        sdk.create_task_snapshot(task.id, "mid")
        sdk.exec_task(task.id, "echo more >> new.txt")
        stat = ok("task", "diff", task.id, "--since", "mid", "--stat").stdout
        assert stat.splitlines() == [
            "modified new.txt | +1 -0",
            "1 changed, 1 insertions(+), 0 deletions(-)",
        ]
        assert ok("task", "diff", task.id, "new.txt", "--since", "mid").stdout.endswith(
            " hi\n+more\n"
        )
        assert sdk.status_task(task.id).snapshots == ["baseline", "mid"]  # the temp one is gone

        # A patch made from a diff goes back into another task: the fork of the baseline.
        text_only = "".join(
            sdk.diff_task(task.id, "new.txt").diff + sdk.diff_task(task.id, "app.py").diff
        ).split("mode ")[0]
        fork = sdk.fork_task(task.id, snapshot="baseline")
        try:
            (tmp_path / "p.diff").write_text(text_only)
            out = ok("task", "patch", fork.id, str(tmp_path / "p.diff")).stdout
            assert "patched 2 file(s)" in out
            assert sdk.read_task_file(fork.id, "new.txt") == b"hi\nmore\n"
            assert sdk.read_task_file(fork.id, "app.py") == b"print('one')\nprint('TWO')\n"
            # Applied again, every hunk fails and nothing changes.
            proc = pyro("task", "patch", fork.id, "-", stdin=text_only.encode())
            assert proc.returncode == 1 and "Traceback" not in proc.stderr
            assert "new.txt: hunk #1 failed: the file exists already" in proc.stderr
            assert "app.py: hunk #1 failed" in proc.stderr
            # One good file and one failing hunk: the good file is not touched either.
            mixed = (
                "--- a/new.txt\n+++ b/new.txt\n@@ -1,2 +1,2 @@\n-hi\n+HI\n more\n"
                "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-nothing like this\n+x\n"
            )
            res = sdk.patch_task(fork.id, mixed)
            assert not res.applied and [(h.path, h.hunk) for h in res.failed] == [("app.py", 1)]
            assert sdk.read_task_file(fork.id, "new.txt") == b"hi\nmore\n"
            listing = sdk.exec_task(fork.id, "ls -a /workspace").stdout
            assert ".pyro-patch" not in listing
            bad = pyro("task", "patch", fork.id, "-", stdin=b"not a diff\n")
            assert bad.returncode != 0 and "no hunks" in bad.stderr
        finally:
            sdk.delete_task(fork.id)
    finally:
        sdk.delete_task(task.id)
