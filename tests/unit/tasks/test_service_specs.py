"""Service definitions stored with a task: how many it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.errors import UsageError
from pyro.tasks.service_specs import MAX_SERVICES, ServiceSpec, load_specs, save_spec


def _spec(name: str, *argv: str) -> ServiceSpec:
    return ServiceSpec(name=name, argv=list(argv or ["true"]), cwd="/workspace", created_at=0)


def test_a_task_keeps_at_most_max_services_definitions(tmp_path: Path) -> None:
    # New names across reboots (each empties the agent's table) must not grow the file.
    for i in range(MAX_SERVICES):
        save_spec(tmp_path, "t1", _spec(f"s{i}"))
    with pytest.raises(UsageError, match=f"has {MAX_SERVICES} service definitions") as info:
        save_spec(tmp_path, "t1", _spec("one-more"))
    assert "start one of its names again" in (info.value.hint or "")
    assert len(load_specs(tmp_path, "t1")) == MAX_SERVICES
    save_spec(tmp_path, "t1", _spec("s0", "sleep", "1"))  # a known name is replaced
    assert load_specs(tmp_path, "t1")["s0"].argv == ["sleep", "1"]
