"""``task update``: rename and relabel, validated like create, journaled; on the CLI too."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pyro.errors import NotFoundError, UsageError
from pyro.tasks.manager import TaskManager
from pyro.tasks.ops import TaskCreateOptions, create
from pyro.tasks.update import update
from tests.unit.tasks.conftest import MakeTask
from tests.unit.tasks.fakes import FakeRegistry
from tests.unit.tasks.test_cli import invoke, run  # noqa: F401  (the CLI fixture)


def test_update_renames_relabels_and_journals_in_the_command_sequence(
    manager: TaskManager, make_task: MakeTask
) -> None:
    task_id = make_task(name="old", labels={"team": "a", "tmp": "1"})
    manager.record_exec(
        task_id,
        {
            "argv": ["true"],
            "cwd": "/",
            "exit_code": 0,
            "started_at": 1.0,
            "finished_at": 1.0,
            "duration_ms": 0,
        },
    )
    info = update(manager, task_id, name="new", labels={"team": "b", "env": "dev"}, unlabel=["tmp"])
    assert (info.name, info.labels) == ("new", {"team": "b", "env": "dev"})
    again = manager.status(task_id)  # persisted, not just returned
    assert (again.name, again.labels) == ("new", {"team": "b", "env": "dev"})
    assert [t.id for t in manager.list_tasks(labels={"env": "dev"})] == [task_id]
    assert manager.list_tasks(labels={"tmp": "1"}) == []
    entries = manager.logs(task_id)
    assert [(e.seq, e.kind) for e in entries] == [(1, "exec"), (2, "update")]
    assert entries[1].argv == [
        "update",
        "--name",
        "new",
        "--label",
        "team=b",
        "--label",
        "env=dev",
        "--unlabel",
        "tmp",
    ]
    assert entries[1].stdout.splitlines() == [
        "name: old -> new",
        "label env: (none) -> dev",
        "label team: a -> b",
        "label tmp: 1 -> (none)",
    ]
    # The next command is numbered after the update.
    nxt = manager.record_exec(
        task_id,
        {
            "argv": ["true"],
            "cwd": "/",
            "exit_code": 0,
            "started_at": 2.0,
            "finished_at": 2.0,
            "duration_ms": 0,
        },
    )
    assert nxt.seq == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "task update got nothing to change"),
        ({"name": ""}, "task name '' is not a name"),
        ({"name": " padded"}, "is not a name"),
        ({"name": "x" * 129}, "is not a name"),
        ({"name": "tab\there"}, "is not a name"),
        ({"labels": {"": "v"}}, "label key '' is not a key"),
        ({"labels": {"a b": "v"}}, "label key 'a b' is not a key"),
        ({"labels": {"k": "line\nbreak"}}, "the value of label 'k' is not a label value"),
        ({"unlabel": ["k=v"]}, "label key 'k=v' is not a key"),
        ({"labels": {"k": "v"}, "unlabel": ["k"]}, "label 'k' is both set and removed"),
    ],
)
def test_bad_updates_are_usage_errors_and_change_nothing(
    manager: TaskManager, make_task: MakeTask, kwargs: dict[str, object], message: str
) -> None:
    task_id = make_task(name="keep", labels={"k": "v"})
    with pytest.raises(UsageError, match=message) as caught:
        update(manager, task_id, **kwargs)  # type: ignore[arg-type]
    assert caught.value.hint
    info = manager.status(task_id)
    assert (info.name, info.labels, manager.logs(task_id)) == ("keep", {"k": "v"}, [])


def test_update_of_a_vm_or_a_missing_task_is_not_found(
    manager: TaskManager, registry: FakeRegistry
) -> None:
    vm = registry.new_task(kind="vm")
    with pytest.raises(NotFoundError, match="is a VM, not a task"):
        update(manager, vm.id, name="x")
    with pytest.raises(NotFoundError, match="no task with id"):
        update(manager, "deadbeef0000", name="x")


def test_create_refuses_what_update_refuses(manager: TaskManager) -> None:
    # Checked before the environment is looked at: nothing is made.
    with pytest.raises(UsageError, match="label key 'a=b' is not a key"):
        create(manager, "debian:12", TaskCreateOptions(labels={"a=b": "1"}), {})
    with pytest.raises(UsageError, match="task name '' is not a name"):
        create(manager, "debian:12", TaskCreateOptions(name=""), {})
    assert manager.list_tasks() == []


def test_cli_task_update_and_list_by_label(
    run: CliRunner,  # noqa: F811
    make_task: MakeTask,
) -> None:
    task_id = make_task(name="alpha", labels={"team": "x"})
    other = make_task(name="beta")
    code, out, _ = invoke(
        run, "update", task_id, "--name", "gamma", "--label", "env=ci", "--unlabel", "team"
    )
    assert code == 0 and "name=gamma" in out and "labels:        env=ci" in out
    code, out, _ = invoke(run, "list", "--label", "env=ci", "--json")
    assert [t["id"] for t in json.loads(out)["tasks"]] == [task_id]
    code, out, _ = invoke(run, "list", "--label", "team=x", "--json")
    assert json.loads(out)["tasks"] == []
    code, out, _ = invoke(run, "logs", task_id)
    assert out.splitlines()[-1].endswith(
        "update --name gamma --label env=ci --unlabel team: name: alpha -> gamma; "
        "label env: (none) -> ci; label team: x -> (none)"
    )
    code, out, _ = invoke(run, "update", other, "--json", "--label", "k=v")
    assert code == 0 and json.loads(out)["task"]["labels"] == {"k": "v"}
    code, _, err = invoke(run, "update", other)
    assert code == 2 and "error: task update got nothing to change" in err and "hint:" in err
    code, _, err = invoke(run, "update", other, "--label", "noeq")
    assert code == 2 and "--label 'noeq' is not K=V" in err
