"""``pyro task …`` rendering, exit codes and JSON, with the SDK running against fake guests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyro.cli import task_cmd
from pyro.cli.main import cli
from pyro.sdk import Pyro
from pyro.tasks.manager import TaskManager
from tests.unit.tasks.conftest import MakeTask
from tests.unit.tasks.fakes import FakeRegistry


class FakePyro(Pyro):
    """The real facade, with its tasks on a registry whose VMs are fakes."""

    def __init__(self, manager: TaskManager) -> None:
        super().__init__()
        self._manager = manager

    @property
    def tasks(self) -> TaskManager:
        self._manager.reap_idle()
        return self._manager


@pytest.fixture
def run(manager: TaskManager, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(task_cmd, "_pyro", lambda: FakePyro(manager))
    return CliRunner()


def invoke(runner: CliRunner, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["task", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_exec_prints_output_and_exits_with_the_command_code(
    run: CliRunner, make_task: MakeTask
) -> None:
    task_id = make_task()
    code, out, err = invoke(run, "exec", task_id, "--", "echo", "hello")
    assert (code, out) == (0, "hello\n")
    assert f"[task] task_id={task_id} seq=1 exit_code=0" in err
    code, out, err = invoke(run, "exec", task_id, "--", "fail-stderr")
    assert (code, err.splitlines()[0]) == (3, "boom")
    code, out, _ = invoke(run, "exec", task_id, "--json", "--", "echo", "j")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["seq"] == 3 and data["stdout"] == "j\n"


def test_status_logs_list_and_delete(run: CliRunner, make_task: MakeTask) -> None:
    task_id = make_task(name="alpha", labels={"team": "x"}, secrets={"TOKEN": "abcd-1234"})
    invoke(run, "exec", task_id, "--secret-env", "TOKEN", "--", "env")
    code, out, _ = invoke(run, "status", task_id)
    assert code == 0 and "commands=1" in out and "last command:" in out and "TOKEN" in out
    code, out, _ = invoke(run, "logs", task_id, "--tail", "1")
    assert code == 0 and "#1" in out and "TOKEN=[REDACTED:TOKEN]" in out and "abcd-1234" not in out
    code, out, _ = invoke(run, "logs", task_id, "--json")
    assert [e["seq"] for e in json.loads(out)["entries"]] == [1]
    code, out, _ = invoke(run, "list", "--label", "team=x", "--json")
    assert [t["id"] for t in json.loads(out)["tasks"]] == [task_id]
    code, out, _ = invoke(run, "list", "--name", "other")
    assert out == "no tasks\n"
    assert invoke(run, "delete", task_id)[1] == f"{task_id} deleted\n"
    code, out, _ = invoke(run, "delete", task_id, "--json")
    assert code == 0 and json.loads(out)["deleted"] is False


def test_unknown_task_is_a_clear_error(run: CliRunner) -> None:
    code, _, err = invoke(run, "status", "deadbeef0000")
    assert code == 1
    assert "error: no task with id 'deadbeef0000'" in err and "hint: run 'pyro task list'" in err
    # exec passes the guest's exit code through: pyro's own failure exits 125 there
    code, out, _ = invoke(run, "exec", "deadbeef0000", "--json", "--", "true")
    assert code == 125 and json.loads(out)["error"]["type"] == "NotFoundError"


def test_bad_pairs_exit_outside_the_guest_range(run: CliRunner, make_task: MakeTask) -> None:
    task_id = make_task()
    code, _, err = invoke(run, "exec", task_id, "--env", "NOEQ", "--", "true")
    assert code == 125 and "--env 'NOEQ' is not K=V" in err


def test_file_write_read_list_are_binary_safe(
    run: CliRunner, make_task: MakeTask, tmp_path: Path, registry: FakeRegistry
) -> None:
    task_id = make_task()
    payload = bytes(range(256)) * 3
    code, out, _ = invoke(run, "file", "write", task_id, "data.bin", stdin=payload)
    assert code == 0 and out == f"{len(payload)} bytes -> /workspace/data.bin\n"
    result = run.invoke(cli, ["task", "file", "read", task_id, "data.bin"])
    assert result.exit_code == 0 and result.stdout_bytes == payload
    host = tmp_path / "script.sh"
    host.write_text("#!/bin/sh\n")
    code, _, _ = invoke(
        run, "file", "write", task_id, "/opt/s.sh", "--from", str(host), "--mode", "755"
    )
    assert code == 0 and registry.guests[task_id].modes["/opt/s.sh"] == 0o755
    code, out, _ = invoke(run, "file", "list", task_id)
    assert code == 0 and "data.bin" in out
    code, _, err = invoke(run, "file", "read", task_id, "missing")
    assert code == 1 and "error:" in err


@pytest.mark.hostile
def test_file_read_stops_at_the_copy_out_byte_cap(
    run: CliRunner, make_task: MakeTask, registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = make_task()
    registry.guests[task_id].files["/workspace/zero"] = b"\0" * 100  # a link to /dev/zero
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "10")
    code, _, err = invoke(run, "file", "read", task_id, "zero")
    assert code != 0 and "copy-out byte limit" in err and "PYRO_COPY_OUT_MAX_BYTES" in err


def test_sync_push_and_export(run: CliRunner, make_task: MakeTask, tmp_path: Path) -> None:
    task_id = make_task()
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("content")
    code, out, _ = invoke(run, "sync", "push", task_id, str(src), "--dest", "/srv/app")
    assert code == 0 and "1 files" in out
    code, _, _ = invoke(run, "export", task_id, "/srv/app", "--output", str(tmp_path / "back"))
    assert code == 0 and (tmp_path / "back" / "d" / "f.txt").read_text() == "content"


@pytest.mark.hostile
def test_export_leaves_git_metadata_out_unless_include_git(
    run: CliRunner, make_task: MakeTask, tmp_path: Path
) -> None:
    task_id = make_task()
    src = tmp_path / "src"
    (src / ".git" / "hooks").mkdir(parents=True)
    (src / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\ntouch pwned\n")
    (src / ".git" / "hooks" / "pre-commit").chmod(0o755)
    (src / "main.py").write_text("print()\n")
    invoke(run, "sync", "push", task_id, str(src), "--dest", "/srv/app")

    code, out, err = invoke(run, "export", task_id, "/srv/app", "--output", str(tmp_path / "a"))
    assert code == 0 and "1 files" in out and "--include-git" in err
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["main.py"]
    code, out, _ = invoke(run, "export", task_id, "/srv/app", "--output", str(tmp_path / "a/.git"))
    assert code != 0 and not (tmp_path / "a" / ".git").exists()

    code, out, _ = invoke(
        run, "export", task_id, "/srv/app", "--output", str(tmp_path / "b"), "--include-git"
    )
    assert code == 0 and "2 files" in out
    assert os.access(tmp_path / "b" / ".git" / "hooks" / "pre-commit", os.X_OK)


def test_create_keeps_secret_values_out_of_argv_for_crash_logs(
    run: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))  # where the crash log goes

    seen: list[list[str]] = []

    def fake_create(self: object, environment: str, **options: object) -> None:
        seen.append(list(sys.argv))
        raise RuntimeError("boom")  # a bug: the CLI writes a crash log with sys.argv

    monkeypatch.setattr(FakePyro, "create_task", fake_create)
    monkeypatch.setattr(sys, "argv", ["pyro", "task", "create", "e", "--secret", "K=value-1234"])
    code, _, err = invoke(run, "create", "e", "--secret", "K=value-1234")
    assert code == 3 and "internal error" in err
    assert seen == [["pyro", "task", "create", "e", "--secret", "K=[REDACTED:K]"]]
    [log] = (tmp_path / "logs").iterdir()
    assert "value-1234" not in log.read_text()
