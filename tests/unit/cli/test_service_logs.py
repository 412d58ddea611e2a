"""`pyro task service logs` prints all of the log the agent keeps, in reads of 512 KiB
(an SDK stand-in serves the log; the real agent's side is in tests/e2e/test_task_procs.py)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from pyro.cli import task_cmd
from pyro.cli.main import cli
from pyro.cli.task_procs_cmd import LOG_KEPT
from pyro.tasks.procs import ProcessOutput

READ = 512 * 1024


class Logs:
    """A service log of ``size`` bytes, or one that grows without pause (``endless``)."""

    def __init__(self, size: int, *, endless: bool = False) -> None:
        self.data = bytes(ord("a") + i % 26 for i in range(size))
        self.endless = endless
        self.reads = 0

    def logs_task_service(
        self, task_id: str, name: str, cursor: int = 0, *, wait_s: float = 0.0
    ) -> ProcessOutput:
        self.reads += 1
        if self.endless:
            self.data += b"z" * READ
        chunk = self.data[cursor : cursor + READ]
        return ProcessOutput(
            task_id=task_id, name=name, data=chunk, cursor=cursor + len(chunk), missed=0,
            running=True,
        )  # fmt: skip


def _logs(monkeypatch: pytest.MonkeyPatch, fake: Any) -> bytes:
    monkeypatch.setattr(task_cmd, "_pyro", lambda: fake)
    result = CliRunner().invoke(cli, ["task", "service", "logs", "t1", "web"])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def test_a_log_longer_than_one_read_is_printed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Logs(700_000)
    assert _logs(monkeypatch, fake) == fake.data
    assert fake.reads == 3  # 512 KiB, the rest, then nothing more


def test_without_follow_a_log_that_keeps_growing_stops_at_what_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Logs(0, endless=True)
    assert len(_logs(monkeypatch, fake)) == LOG_KEPT
