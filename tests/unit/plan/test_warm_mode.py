"""The planner picks ``boot (restore)`` only for a saved guest of exactly the run's shape."""

from __future__ import annotations

from typing import Any

import pytest
from unit.plan.fixtures import AGENT_DIGEST, INSTALLED_DIGEST, inventory, run_spec

from pyro.plan.inventory import SavedGuest
from pyro.plan.model import BootStep
from pyro.plan.planner import plan
from pyro.plan.render import render_text

SAVED = SavedGuest(
    environment_digest=INSTALLED_DIGEST,
    agent_digest=AGENT_DIGEST,
    backend="qemu-tcg",
    vcpus=1,
    memory_mib=768,
)


def boot(result: Any) -> BootStep:
    return next(s for s in result.steps if isinstance(s, BootStep))


def test_matching_snapshot_plans_a_restore() -> None:
    result = plan(run_spec(), inventory("installed", snapshots=[SAVED]))
    assert result.applyable
    assert boot(result).mode == "restore"
    assert "network=off restore" in render_text(result)


def test_no_snapshot_plans_a_cold_boot() -> None:
    result = plan(run_spec(), inventory("installed"))
    assert boot(result).mode == "cold"
    assert "network=off cold" in render_text(result)


@pytest.mark.parametrize(
    "change",
    [
        {"environment_digest": "sha256:" + "9" * 64},
        {"agent_digest": "sha256:" + "9" * 64},
        {"backend": "qemu-kvm"},
        {"vcpus": 2},
        {"memory_mib": 512},
    ],
)
def test_snapshot_of_another_shape_is_not_used(change: dict[str, Any]) -> None:
    other = SAVED.model_copy(update=change)
    assert boot(plan(run_spec(), inventory("installed", snapshots=[other]))).mode == "cold"


def test_an_egress_run_restores_only_a_guest_saved_with_egress() -> None:
    egress = run_spec(network={"policy": "egress"})
    assert boot(plan(egress, inventory("installed", snapshots=[SAVED]))).mode == "cold"
    saved = SAVED.model_copy(update={"network": "egress"})
    assert boot(plan(egress, inventory("installed", snapshots=[saved]))).mode == "restore"
    assert boot(plan(run_spec(), inventory("installed", snapshots=[saved]))).mode == "cold"


@pytest.mark.parametrize(
    "spec",
    [
        {"network": {"policy": "allowlist", "allow": ["127.0.0.1:8080"]}},
        {"network": {"publish": [{"host": 18080, "guest": 80}]}},
        {"cleanup": "never"},
        {"cleanup": "on-success"},
    ],
)
def test_runs_that_must_boot_cold(spec: dict[str, Any]) -> None:
    result = plan(run_spec(**spec), inventory("installed", snapshots=[SAVED]))
    assert boot(result).mode == "cold"


def test_environment_still_to_be_pulled_boots_cold() -> None:
    pulled = SAVED.model_copy(update={"memory_mib": 512})
    result = plan(run_spec(), inventory("pullable", snapshots=[pulled]))
    assert boot(result).mode == "cold"


def test_a_restored_guest_takes_its_files_through_the_agent_unless_told() -> None:
    from pyro.plan.inventory import DiskCopy, SourceContent

    spec = run_spec(files=[{"source": "tree", "target": "/t"}])
    tree = [SourceContent(path="tree", digest="sha256:" + "1" * 64, files=2001, bytes=70 << 20)]
    measured = DiskCopy(min_bytes=32 << 20, file_weight=128 << 10)
    forced = DiskCopy(min_bytes=0, file_weight=64 << 10, restored_min_bytes=0)
    for rule, cold, restored in ((measured, "disk", "agent"), (forced, "disk", "disk")):
        for snapshots, way in (([], cold), ([SAVED], restored)):
            result = plan(
                spec, inventory("installed", sources=tree, disk_copy=rule, snapshots=snapshots)
            )
            assert boot(result).mode == ("restore" if snapshots else "cold")
            assert getattr(result.step("copy-in.0"), "by", None) == way
