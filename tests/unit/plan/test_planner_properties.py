"""Properties of the planner over many inventories: total, deterministic, self-consistent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyro.plan.inventory import BackendInfo, HostInfo
from pyro.plan.model import plan_from_json, render_json
from pyro.plan.planner import AUTO_ORDER, plan
from pyro.plan.render import render_text

from .fixtures import inventory, run_spec

backends = st.lists(
    st.builds(
        BackendInfo,
        name=st.sampled_from(AUTO_ORDER),
        usable=st.booleans(),
        can_exec=st.booleans(),
        reason=st.sampled_from(["", "not found"]),
    ),
    max_size=3,
    unique_by=lambda info: info.name,
)
hosts = st.builds(
    HostInfo,
    arch=st.just("x86_64"),
    cpus=st.integers(1, 8),
    memory_mib=st.integers(128, 8192),
    kvm=st.sampled_from(["hardware", "pvm", "none"]),
)


@settings(max_examples=150, deadline=None)
@given(
    variant=st.sampled_from(["installed", "pullable", "buildable", "empty"]),
    backend_list=backends,
    host=hosts,
    explicit=st.sampled_from(["auto", *AUTO_ORDER]),
    vcpus=st.integers(1, 8),
)
def test_planning_is_total_and_consistent(
    variant: str, backend_list: list[BackendInfo], host: HostInfo, explicit: str, vcpus: int
) -> None:
    inv = inventory(variant, backends=backend_list, host=host)
    spec = run_spec(backend=explicit, resources={"vcpus": vcpus})
    result = plan(spec, inv)
    assert result.applyable == (result.errors == [])
    chosen = result.inventory.backend
    if chosen is not None:
        info = next(b for b in backend_list if b.name == chosen)
        assert info.usable and info.can_exec
    if result.applyable:
        assert chosen is not None and result.environment is not None
        assert vcpus <= host.cpus
    assert plan(spec, inv).digest == result.digest
    assert plan_from_json(render_json(result)) == result
    assert render_text(result).endswith("\n")
