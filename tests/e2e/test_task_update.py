"""``task update`` on a real guest: the SDK renames and relabels a running task, the CLI (a
fresh process) sees it, filters by the new label, journals it between two commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import UsageError
from pyro.sdk import Pyro

pytestmark = pytest.mark.guest

ROOT = Path(__file__).parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyro.cli", "task", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_rename_and_relabel_a_running_task(guest_install: Any, pyro_state: Path) -> None:
    pyro = Pyro()
    task = pyro.create_task("debian:12", name="build", labels={"team": "a", "tmp": "x"})
    try:
        first = pyro.exec_task(task.id, "echo before > f")
        info = pyro.update_task(task.id, name="build-2", labels={"stage": "ci"}, unlabel=["tmp"])
        assert (info.name, info.labels, info.state) == (
            "build-2",
            {"team": "a", "stage": "ci"},
            "running",
        )
        with pytest.raises(UsageError, match="is not a name"):
            pyro.update_task(task.id, name="")
        updated = cli("update", task.id, "--label", "team=b", "--json")
        assert updated.returncode == 0, updated.stderr
        assert json.loads(updated.stdout)["task"]["labels"] == {"team": "b", "stage": "ci"}
        listed = cli("list", "--label", "stage=ci", "--label", "team=b", "--json")
        assert [t["id"] for t in json.loads(listed.stdout)["tasks"]] == [task.id]
        assert json.loads(cli("list", "--label", "tmp=x", "--json").stdout)["tasks"] == []
        after = pyro.exec_task(task.id, "cat f")  # the guest never noticed
        assert after.stdout == "before\n"
        logs = pyro.logs_task(task.id).entries
        assert [(e.seq, e.kind) for e in logs] == [
            (first.seq, "exec"),
            (2, "update"),
            (3, "update"),
            (after.seq, "exec"),
        ]
        assert after.seq == 4
        assert logs[1].stdout.splitlines() == [
            "name: build -> build-2",
            "label stage: (none) -> ci",
            "label tmp: x -> (none)",
        ]
        text = cli("logs", task.id).stdout
        assert "update --label team=b: label team: a -> b" in text
    finally:
        pyro.delete_task(task.id)
