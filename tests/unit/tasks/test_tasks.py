"""Task logic against fake guests: exec + journal, secrets and redaction, lifecycle, reaping."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pyro.errors import GuestError, NotFoundError, UsageError
from pyro.tasks.manager import TaskManager
from pyro.tasks.ops import exec_command, reset, snapshot_create, snapshot_delete
from tests.unit.tasks.conftest import MakeTask
from tests.unit.tasks.fakes import FakeRegistry

SECRET = "hunter2-very-secret"


def test_exec_runs_in_the_workspace_and_is_journaled(
    manager: TaskManager, make_task: MakeTask
) -> None:
    task_id = make_task()
    first = exec_command(manager, task_id, ["pwd"])
    second = exec_command(manager, task_id, ["false"], cwd="sub")
    assert (first.seq, first.exit_code, first.stdout) == (1, 0, "/workspace\n")
    assert (second.seq, second.exit_code) == (2, 1)
    entries = manager.logs(task_id)
    assert [(e.seq, e.argv, e.cwd, e.exit_code) for e in entries] == [
        (1, ["pwd"], "/workspace", 0),
        (2, ["false"], "/workspace/sub", 1),
    ]
    status = manager.status(task_id)
    assert status.command_count == 2
    assert status.last_command is not None and status.last_command.argv == ["false"]
    assert [e.seq for e in manager.logs(task_id, tail=1)] == [2]


def test_shell_strings_run_with_sh_c(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    task_id = make_task()
    exec_command(manager, task_id, "echo hi > out.txt")
    assert registry.guests[task_id].execs[-1][0] == ["/bin/sh", "-c", "echo hi > out.txt"]


def test_every_task_exec_asks_the_guest_to_sync_before_it_reports_the_end(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    # The task's disk outlives its VM; see test_what_a_finished_exec_wrote_survives_... (e2e).
    task_id = make_task()
    before = len(registry.guests[task_id].synced)
    exec_command(manager, task_id, ["true"])
    exec_command(manager, task_id, "echo hi > out.txt")
    assert registry.guests[task_id].synced[before:] == [True, True]


def test_secrets_are_injected_only_when_asked_and_redacted_everywhere(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry, tmp_path: Path
) -> None:
    task_id = make_task(secrets={"TOKEN": SECRET})
    plain = exec_command(manager, task_id, ["env"], env={"A": "1"})
    assert "TOKEN" not in plain.stdout and "A=1" in plain.stdout
    asked = exec_command(manager, task_id, ["env"], secret_env=["TOKEN"])
    assert registry.guests[task_id].execs[-1][1]["TOKEN"] == SECRET  # the guest got it
    assert "TOKEN=[REDACTED:TOKEN]" in asked.stdout
    echoed = exec_command(manager, task_id, ["echo", SECRET])
    assert echoed.stdout == "[REDACTED:TOKEN]\n"
    assert manager.logs(task_id)[-1].argv == ["echo", "[REDACTED:TOKEN]"]
    assert SECRET not in manager.status(task_id).model_dump_json()
    # Nothing the host wrote holds the value, except the 0600 secrets file itself.
    task_dir = registry.dir(task_id)
    for path in registry.root.parent.rglob("*"):
        if path.is_file() and path != task_dir / "secrets.json":
            assert SECRET.encode() not in path.read_bytes(), path


def test_unknown_secret_name_is_refused_before_running(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    task_id = make_task(secrets={"TOKEN": SECRET})
    with pytest.raises(UsageError, match="no secret named 'OTHER'"):
        exec_command(manager, task_id, ["env"], secret_env=["OTHER"])
    assert registry.guests[task_id].execs == [] and manager.logs(task_id) == []


def test_a_broken_exec_is_journaled_with_its_error(
    manager: TaskManager, make_task: MakeTask
) -> None:
    task_id = make_task()
    with pytest.raises(GuestError, match="connection closed"):
        exec_command(manager, task_id, ["crash"])
    [entry] = manager.logs(task_id)
    assert entry.exit_code is None and entry.error is not None and "crash" in entry.error
    with pytest.raises(KeyboardInterrupt):
        exec_command(manager, task_id, ["interrupt"])
    last = manager.logs(task_id)[-1]
    assert (last.seq, last.exit_code, last.error) == (
        2,
        None,
        "interrupted on the host (the command was cancelled)",
    )


def test_exec_boots_a_stopped_task_from_its_disk(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    task_id = make_task()
    manager.stop(task_id)
    assert manager.status(task_id).state == "stopped"
    assert exec_command(manager, task_id, ["echo", "back"]).stdout == "back\n"
    assert manager.status(task_id).state == "running"
    assert registry.starts == 2


def test_list_filters_by_name_and_labels(manager: TaskManager, make_task: MakeTask) -> None:
    a = make_task(name="web", labels={"team": "a", "env": "dev"})
    b = make_task(name="web", labels={"team": "b"})
    c = make_task(name="db")
    assert [t.id for t in manager.list_tasks()] == [a, b, c]
    assert [t.id for t in manager.list_tasks(name="web")] == [a, b]
    assert [t.id for t in manager.list_tasks(labels={"team": "a", "env": "dev"})] == [a]
    assert manager.list_tasks(name="db", labels={"team": "a"}) == []


def test_delete_is_idempotent_and_refuses_vm_ids(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    task_id = make_task()
    assert manager.delete(task_id) is True
    assert not registry.dir(task_id).exists()
    assert manager.delete(task_id) is False
    with pytest.raises(NotFoundError, match="no task with id"):
        manager.status(task_id)
    vm = registry.new_task(kind="vm")
    with pytest.raises(NotFoundError, match="is a VM, not a task"):
        manager.delete(vm.id)
    assert registry.dir(vm.id).exists()


def test_idle_tasks_are_stopped_and_busy_ones_kept(
    manager: TaskManager, make_task: MakeTask
) -> None:
    idle = make_task(idle=60)
    busy = make_task(idle=60)
    forever = make_task()
    _, meta = manager.get(idle)
    manager.save_meta(idle, meta.model_copy(update={"last_activity_at": time.time() - 61}))
    assert manager.reap_idle() == [idle]
    status = manager.status(idle)
    assert status.state == "stopped" and "idle" in status.reason
    assert manager.status(busy).state == manager.status(forever).state == "running"


def test_ttl_reaping_deletes_tasks(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    task_id = make_task(ttl_seconds=1, start=False)
    record = registry.get(task_id)
    registry.save(record.model_copy(update={"created_at": time.time() - 5}))
    assert task_id in registry.reap()
    assert manager.delete(task_id) is False


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_offline_snapshots_with_a_real_qcow2(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry, tmp_path: Path
) -> None:
    task_id = make_task(start=False)
    disk = registry.dir(task_id) / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    snap = snapshot_create(manager, task_id, "before")
    assert not snap.online and manager.status(task_id).snapshots == ["before"]
    listed = subprocess.run(
        ["qemu-img", "snapshot", "-l", str(disk)], check=True, capture_output=True, text=True
    ).stdout
    assert "before" in listed
    with pytest.raises(Exception, match="already has a snapshot"):
        snapshot_create(manager, task_id, "before")
    with pytest.raises(UsageError):
        snapshot_create(manager, task_id, "bad name")
    info = reset(manager, task_id, "before")
    assert info.state == "running" and info.reason == ""
    with pytest.raises(NotFoundError, match="no snapshot named 'nope'"):
        reset(manager, task_id, "nope")
    manager.stop(task_id)
    assert snapshot_delete(manager, task_id, "before") is True
    assert snapshot_delete(manager, task_id, "before") is False
    assert manager.status(task_id).snapshots == []


def test_a_task_being_started_makes_the_next_caller_wait_then_fail_clearly(
    manager: TaskManager, make_task: MakeTask, registry: FakeRegistry
) -> None:
    from filelock import FileLock

    from pyro.errors import StateError

    task_id = make_task()
    holder = FileLock(str(registry.locks / f"task-{task_id}.session.lock"))
    with holder:  # held only while a caller finds or starts the keeper (and boots)
        with (
            pytest.raises(StateError, match="busy starting") as info,
            manager.session(task_id, wait=0.2),
        ):
            pass
        assert "pyro task stop" in info.value.hint
    with manager.session(task_id, wait=0.2) as client:
        assert client.exec(["echo", "free"]).stdout == b"free\n"


def test_sessions_are_shared_one_keeper_per_task_and_never_queued(
    manager: TaskManager, make_task: MakeTask
) -> None:
    task_id = make_task()
    sessions = manager.sessions
    with manager.session(task_id, wait=0.2) as one, manager.session(task_id, wait=0.2) as two:
        assert one.exec(["echo", "1"]).stdout == b"1\n"
        assert two.exec(["echo", "2"]).stdout == b"2\n"
    assert sessions.started == 1  # type: ignore[attr-defined]
    manager.stop(task_id)
    assert task_id not in sessions.running  # type: ignore[attr-defined]


def test_a_task_running_a_long_command_is_not_idle(
    manager: TaskManager, make_task: MakeTask
) -> None:
    task_id = make_task(idle=60)
    _, meta = manager.get(task_id)
    manager.save_meta(task_id, meta.model_copy(update={"last_activity_at": time.time() - 61}))
    with manager.session(task_id):
        assert manager.reap_idle() == []  # a command holds a session
    assert manager.status(task_id).state == "running"
    assert manager.reap_idle() == [task_id]


def test_the_journal_numbers_execs_at_start_and_lists_them_in_start_order(
    manager: TaskManager, make_task: MakeTask
) -> None:
    # Two execs at once: the first to start ends last, so the file is in end order.
    task_id = make_task()
    first = manager.begin_exec(task_id)
    second = manager.begin_exec(task_id)
    base = {"argv": ["x"], "cwd": "/w", "exit_code": 0}
    manager.record_exec(
        task_id, {**base, "seq": second, "started_at": 11, "finished_at": 12, "duration_ms": 1}
    )
    manager.record_exec(
        task_id, {**base, "seq": first, "started_at": 10, "finished_at": 13, "duration_ms": 3}
    )
    manager.record_exec(task_id, {**base, "started_at": 14, "finished_at": 15, "duration_ms": 1})
    entries = manager.logs(task_id)
    assert [(e.seq, e.overlaps) for e in entries] == [(1, [2]), (2, [1]), (3, [])]
    assert [e.seq for e in manager.logs(task_id, tail=2)] == [2, 3]
    assert manager.status(task_id).command_count == 3
    raw = (manager.dir(task_id) / "journal.jsonl").read_text()
    assert "overlaps" not in raw  # worked out on reading, never stored
    # An update (rename, relabel) made while an exec ran runs nothing: no overlap.
    from pyro.tasks.journal import Journal, JournalEntry

    update = JournalEntry(
        seq=4, kind="update", argv=["update"], cwd="", exit_code=0,
        started_at=10.5, finished_at=10.5, duration_ms=0,
    )  # fmt: skip
    Journal(manager.dir(task_id)).append(update)
    assert [(e.seq, e.overlaps) for e in manager.logs(task_id)] == [
        (1, [2]), (2, [1]), (3, []), (4, [])
    ]  # fmt: skip


def test_out_of_range_arguments_are_usage_errors(manager: TaskManager, make_task: MakeTask) -> None:
    from pyro.tasks.ops import TaskCreateOptions, create

    for options in (
        TaskCreateOptions(vcpus=0),
        TaskCreateOptions(memory_mib=64),
        TaskCreateOptions(ttl_seconds=0),
        TaskCreateOptions(idle_timeout_seconds=-5),
    ):
        with pytest.raises(UsageError, match="must be"):
            create(manager, "debian:12", options, {})
    with pytest.raises(UsageError, match="timeout_seconds is 0"):
        exec_command(manager, make_task(), ["true"], timeout_seconds=0)
