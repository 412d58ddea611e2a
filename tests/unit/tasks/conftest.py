"""Fixtures for task logic tests: a real on-disk registry whose VMs are fakes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyro.tasks.manager import TaskManager, TaskMeta
from pyro.tasks.secrets import SecretStore
from tests.unit.tasks.fakes import FakeRegistry, FakeSessions


@pytest.fixture
def registry(tmp_path: Path) -> FakeRegistry:
    return FakeRegistry(tmp_path / "state")


@pytest.fixture
def manager(registry: FakeRegistry) -> TaskManager:
    return TaskManager(registry, FakeSessions(registry))  # type: ignore[arg-type]


MakeTask = Callable[..., str]


@pytest.fixture
def make_task(registry: FakeRegistry, manager: TaskManager) -> MakeTask:
    def make(
        secrets: dict[str, str] | None = None,
        idle: int | None = None,
        start: bool = True,
        **fields: object,
    ) -> str:
        record = registry.new_task(**fields)
        SecretStore(registry.dir(record.id)).save(secrets or {})
        meta = TaskMeta(
            idle_timeout_seconds=idle,
            last_activity_at=time.time(),
            secret_names=sorted(secrets or {}),
        )
        manager.save_meta(record.id, meta)
        if start:
            registry.start(record.id)[1].close()
        return record.id

    return make
