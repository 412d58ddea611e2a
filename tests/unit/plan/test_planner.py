"""The planner: every way an environment is obtained, every reason a plan is not applyable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyro.errors import PlanError
from pyro.plan.inventory import (
    BackendInfo,
    DiskCopy,
    InstalledEnvironment,
    RemoteEnvironment,
    SourceContent,
    UnresolvedRemote,
)
from pyro.plan.model import (
    ACTIONS,
    BootStep,
    BuildStep,
    CopyInStep,
    ExecStep,
    PullStep,
    plan_from_json,
    render_json,
)
from pyro.plan.planner import plan
from pyro.plan.render import render_text
from pyro.spec.load import load_spec

from .fixtures import (
    AGENT_SOURCE_DIGEST,
    CONTENT_DIGEST,
    INSTALLED_DIGEST,
    REMOTE_DIGEST,
    SOURCE,
    SPEC_DIGEST,
    environment_spec,
    inventory,
    run_spec,
)


def codes(result: object) -> list[str]:
    return [issue.code for issue in result.errors]  # type: ignore[attr-defined]


def test_installed_environment_is_pinned_and_not_pulled() -> None:
    result = plan(run_spec(), inventory("installed"))
    assert result.applyable and result.errors == []
    assert [s.action for s in result.steps] == ["boot", "exec", "cleanup"]
    assert result.environment is not None
    assert result.environment.origin == "installed"
    # pinned by what the install holds, not by this cache's manifest of it
    assert result.environment.digest == CONTENT_DIGEST
    boot = result.step("boot")
    assert isinstance(boot, BootStep)
    assert boot.environment_digest == CONTENT_DIGEST
    # the agent's sources, not this host's build of them
    assert boot.agent_digest == AGENT_SOURCE_DIGEST
    assert (boot.backend, boot.mode) == ("qemu-tcg", "cold")
    # resources default from the install (768), not the catalog (512)
    assert (result.resources.vcpus, result.resources.memory_mib) == (1, 768)


def test_the_same_bytes_installed_elsewhere_give_the_same_plan() -> None:
    """Another machine's install of the same kernel and rootfs has another manifest (it was
    pulled, not built: its source differs) but the same content: the plan is the same."""
    here = inventory("installed")
    (install,) = here.installed
    elsewhere = inventory(
        "installed",
        installed=[install.model_copy(update={"digest": "sha256:" + "7" * 64})],
        agent_digest="sha256:" + "8" * 64,  # another compiler built the same agent sources
    )
    assert plan(run_spec(), elsewhere) == plan(run_spec(), here)


def test_the_plan_records_the_spec_folder(tmp_path: Path) -> None:
    loaded = load_spec(run_spec().model_dump(mode="json", by_alias=True), base_dir=tmp_path)
    assert plan(loaded, inventory("installed")).spec_dir == str(tmp_path)
    assert plan(run_spec(), inventory("installed")).spec_dir is None


def test_copy_in_sources_are_pinned_by_their_content() -> None:
    spec = run_spec(
        files=[{"source": "src", "target": "/src"}, {"source": "gone", "target": "/gone"}]
    )
    sources = [SourceContent(path="src", digest=REMOTE_DIGEST)]
    result = plan(spec, inventory("installed", sources=sources))
    first, second = result.step("copy-in.0"), result.step("copy-in.1")
    assert isinstance(first, CopyInStep) and isinstance(second, CopyInStep)
    assert (first.digest, second.digest) == (REMOTE_DIGEST, None)


def test_a_large_copy_in_goes_by_disk_by_the_inventory_rule() -> None:
    spec = run_spec(
        files=[
            {"source": "tree", "target": "/t"},
            {"source": "small", "target": "/s"},
            {"source": "gone", "target": "/g"},
        ]
    )
    sources = [
        SourceContent(path="tree", digest=REMOTE_DIGEST, files=2001, bytes=70 << 20),
        SourceContent(path="small", digest=REMOTE_DIGEST, files=3, bytes=1 << 20),
    ]
    rule = DiskCopy(min_bytes=32 << 20, file_weight=128 << 10)
    result = plan(spec, inventory("installed", sources=sources, disk_copy=rule))
    ways = [getattr(result.step(f"copy-in.{i}"), "by", None) for i in range(3)]
    assert ways == ["disk", "agent", "agent"]  # a missing source fails on the agent path
    # 250 files of nothing weigh as much as 32 MiB: the crossover the rule encodes.
    many = [SourceContent(path="tree", digest=REMOTE_DIGEST, files=256, bytes=0)]
    result = plan(spec, inventory("installed", sources=many, disk_copy=rule))
    assert getattr(result.step("copy-in.0"), "by", None) == "disk"
    # No rule (an older inventory, or none gathered): the agent path.
    result = plan(spec, inventory("installed", sources=sources))
    assert getattr(result.step("copy-in.0"), "by", None) == "agent"
    # Not on QEMU: no spare disk.
    fc = [BackendInfo(name="firecracker", usable=True, version="1.7")]
    result = plan(spec, inventory("installed", sources=sources, disk_copy=rule, backends=fc))
    assert result.inventory.backend == "firecracker"
    assert getattr(result.step("copy-in.0"), "by", None) == "agent"
    # The decision travels in the plan's JSON: apply reads it from there.
    again = plan_from_json(
        render_json(plan(spec, inventory("installed", sources=sources, disk_copy=rule)))
    )
    assert getattr(again.step("copy-in.0"), "by", None) == "disk"


def test_install_built_from_another_spec_is_not_used() -> None:
    stale = InstalledEnvironment(
        name="debian:12",
        version="1.0.0",
        digest=INSTALLED_DIGEST,
        content_digest=CONTENT_DIGEST,
        spec_digest="sha256:" + "9" * 64,
    )
    result = plan(run_spec(), inventory("buildable", installed=[stale]))
    assert result.environment is not None and result.environment.origin == "build"


def test_pullable_environment_gets_a_pull_step_with_the_remote_digest() -> None:
    result = plan(run_spec(), inventory("pullable"))
    assert result.applyable
    pull = result.steps[0]
    assert isinstance(pull, PullStep)
    assert (pull.id, pull.ref, pull.digest) == ("pull", SOURCE, REMOTE_DIGEST)
    assert result.environment is not None
    assert (result.environment.origin, result.environment.digest) == ("pull", REMOTE_DIGEST)


def test_pull_without_a_resolved_digest_when_the_host_cannot_build() -> None:
    result = plan(run_spec(), inventory("pullable", remote=[]))
    pull = result.steps[0]
    assert isinstance(pull, PullStep) and pull.digest is None
    assert result.applyable


def test_unresolved_source_but_buildable_builds() -> None:
    inv = inventory("pullable", remote=[])
    entry = inv.catalog[0].model_copy(update={"buildable": True})
    result = plan(run_spec(), inv.model_copy(update={"catalog": [entry]}))
    assert isinstance(result.steps[0], BuildStep)
    assert result.warnings == []  # the registry was not asked (--offline): nothing to say


UNREACHABLE = "cannot reach registry 127.0.0.1:5000 for manifest 12: ConnectionError"


def _registry_down(**changes: object) -> object:
    inv = inventory("pullable", remote=[], **changes)
    entry = inv.catalog[0].model_copy(update={"buildable": True})
    missed = [UnresolvedRemote(ref=SOURCE, reason=UNREACHABLE)]
    return inv.model_copy(update={"catalog": [entry], "unresolved": missed})


def test_a_build_because_the_registry_did_not_answer_is_a_warning() -> None:
    result = plan(run_spec(), _registry_down())  # type: ignore[arg-type]
    assert isinstance(result.steps[0], BuildStep) and result.applyable
    (warning,) = result.warnings
    assert warning.code == "environment.pull-unavailable"
    assert SOURCE in warning.message and UNREACHABLE in warning.message
    assert "built locally" in warning.message and "PYRO_NO_BUILD" in warning.hint
    assert "warnings (1):" in render_text(result) and UNREACHABLE in render_text(result)
    assert plan_from_json(render_json(result)) == result  # warnings are part of the digest


def test_no_build_fails_fast_when_the_registry_did_not_answer() -> None:
    result = plan(run_spec(), _registry_down(builds_forbidden=True))  # type: ignore[arg-type]
    assert not result.applyable and result.warnings == []
    assert codes(result) == ["environment.build-forbidden"]
    (error,) = result.errors
    assert "builds are off" in error.message and UNREACHABLE in error.message
    assert "pyro env push debian:12" in error.hint


def test_no_build_without_any_registry_says_to_set_one() -> None:
    result = plan(run_spec(), inventory("buildable", builds_forbidden=True))
    assert codes(result) == ["environment.build-forbidden"]
    assert "no registry" in result.errors[0].message
    assert "PYRO_ENV_REGISTRY" in result.errors[0].hint


def test_no_build_plans_the_pull_when_the_registry_was_not_asked() -> None:
    inv = inventory("pullable", remote=[], builds_forbidden=True)
    entry = inv.catalog[0].model_copy(update={"buildable": True})
    result = plan(run_spec(), inv.model_copy(update={"catalog": [entry]}))
    assert isinstance(result.steps[0], PullStep) and result.steps[0].digest is None
    assert result.applyable


def test_no_build_leaves_installed_and_pullable_environments_alone() -> None:
    for variant in ("installed", "pullable"):
        result = plan(run_spec(), inventory(variant, builds_forbidden=True))
        assert result.applyable and not any(isinstance(s, BuildStep) for s in result.steps)


def test_buildable_environment_gets_a_build_step_with_the_spec_digest() -> None:
    result = plan(run_spec(), inventory("buildable"))
    build = result.steps[0]
    assert isinstance(build, BuildStep)
    assert (build.id, build.ref, build.spec_digest) == ("build", "debian:12", SPEC_DIGEST)
    # the document it builds, from pyro's own catalog folder: apply reads no spec
    assert (build.document, build.folder) == (inventory("buildable").catalog[0].document, None)
    assert result.applyable


def test_unobtainable_environment_is_an_error() -> None:
    entry = inventory("buildable").catalog[0].model_copy(update={"buildable": False})
    result = plan(run_spec(), inventory("empty", catalog=[entry]))
    assert codes(result) == ["environment.unobtainable"]
    assert not result.applyable


def test_unknown_environment_hints_at_env_list() -> None:
    result = plan(run_spec(environment="nosuch:1"), inventory("installed"))
    assert not result.applyable
    assert codes(result) == ["environment.unknown"]
    issue = result.errors[0]
    assert "run 'pyro env list'" in issue.hint
    assert issue.pointer == "/spec/environment"
    assert result.environment is None


def test_unknown_spec_path_points_at_the_path() -> None:
    result = plan(run_spec(environment="./envs/missing.yaml"), inventory("installed"))
    assert codes(result) == ["environment.unknown"]
    assert "./envs/missing.yaml" in result.errors[0].message


def test_spec_path_found_in_the_catalog_builds() -> None:
    inv = inventory("buildable")
    entry = inv.catalog[0].model_copy(
        update={"ref": "./env.yaml", "name": "mine:1", "folder": "envs"}
    )
    result = plan(run_spec(environment="./env.yaml"), inv.model_copy(update={"catalog": [entry]}))
    assert result.applyable
    build = result.steps[0]
    assert isinstance(build, BuildStep) and build.ref == "./env.yaml"
    assert (build.document, build.folder) == (entry.document, "envs")


def test_oci_reference_pulls_with_remote_digest() -> None:
    ref = "oci://127.0.0.1:5000/pyro/custom:v1"
    inv = inventory("empty", remote=[RemoteEnvironment(ref=ref, digest=REMOTE_DIGEST)])
    result = plan(run_spec(environment=ref), inv)
    assert result.applyable
    pull = result.steps[0]
    assert isinstance(pull, PullStep) and (pull.ref, pull.digest) == (ref, REMOTE_DIGEST)


def test_oci_reference_already_installed_is_not_pulled() -> None:
    ref = "oci://127.0.0.1:5000/pyro/custom:v1"
    installed = InstalledEnvironment(
        name="custom",
        version="1.0.0",
        digest=INSTALLED_DIGEST,
        content_digest=CONTENT_DIGEST,
        source=ref,
    )
    result = plan(run_spec(environment=ref), inventory("empty", installed=[installed]))
    assert result.steps[0].action == "boot"
    assert result.environment is not None and result.environment.origin == "installed"


def test_same_file_environment_document_is_usable_by_name() -> None:
    document = environment_spec("local:1")
    result = plan(
        run_spec(environment="local:1"), inventory("empty"), environments={"local:1": document}
    )
    assert result.applyable
    build = result.steps[0]
    assert isinstance(build, BuildStep)
    # the document itself, read in the Run spec's folder
    assert (build.document, build.folder) == (document, ".")
    # defaults come from the document
    assert (result.resources.vcpus, result.resources.memory_mib) == (2, 256)
    # the same document always gives the same spec digest
    again = plan(
        run_spec(environment="local:1"), inventory("empty"), environments={"local:1": document}
    )
    assert again.digest == result.digest


def test_no_usable_backend_hints_at_doctor() -> None:
    backends = [BackendInfo(name="qemu-tcg", usable=False, reason="qemu-system-x86_64 not found")]
    result = plan(run_spec(), inventory("installed", backends=backends))
    assert codes(result) == ["backend.none"]
    assert "run 'pyro doctor'" in result.errors[0].hint
    assert result.inventory.backend is None
    assert "qemu-system-x86_64 not found" in result.inventory.backend_reason


def test_backend_that_cannot_exec_is_not_usable() -> None:
    backends = [BackendInfo(name="qemu-kvm", usable=True, can_exec=False)]
    result = plan(run_spec(), inventory("installed", backends=backends))
    assert codes(result) == ["backend.none"]
    assert "cannot run user space" in result.inventory.backend_reason


def test_auto_order_prefers_firecracker_then_qemu_kvm() -> None:
    everything = [
        BackendInfo(name="qemu-tcg", usable=True),
        BackendInfo(name="qemu-kvm", usable=True),
        BackendInfo(name="firecracker", usable=True),
    ]
    assert (
        plan(run_spec(), inventory("installed", backends=everything)).inventory.backend
        == "firecracker"
    )
    assert (
        plan(run_spec(), inventory("installed", backends=everything[:2])).inventory.backend
        == "qemu-kvm"
    )
    # the default fixture: firecracker missing, qemu-kvm cannot exec -> qemu-tcg, with the reasons
    chosen = plan(run_spec(), inventory("installed")).inventory
    assert chosen.backend == "qemu-tcg"
    assert "firecracker: firecracker binary not found" in chosen.backend_reason


def test_explicit_backend_not_usable() -> None:
    result = plan(run_spec(backend="qemu-kvm"), inventory("installed"))
    assert codes(result) == ["backend.unusable"]
    assert result.errors[0].pointer == "/spec/backend"
    assert plan(run_spec(backend="qemu-tcg"), inventory("installed")).applyable


@pytest.mark.parametrize(
    ("resources", "code"),
    [({"vcpus": 4}, "resources.vcpus"), ({"memoryMiB": 8192}, "resources.memory")],
)
def test_resources_above_host_limits(resources: dict[str, int], code: str) -> None:
    result = plan(run_spec(resources=resources), inventory("installed"))
    assert codes(result) == [code]
    assert not result.applyable


def test_all_errors_are_reported_together() -> None:
    result = plan(
        run_spec(environment="nosuch:1", resources={"vcpus": 4}), inventory("empty", backends=[])
    )
    assert codes(result) == ["environment.unknown", "backend.none", "resources.vcpus"]


def test_steps_ids_inputs_and_env_merge() -> None:
    spec = run_spec(
        env={"A": "spec", "B": "spec"},
        files=[{"source": "./src", "target": "/workspace/src"}, {"source": "x", "target": "/x"}],
        steps=[
            {"name": "one", "run": "echo $A", "env": {"B": "step", "C": "step"}},
            {
                "name": "two",
                "argv": ["ls", "-la"],
                "cwd": "/workspace",
                "timeoutSeconds": 30,
                "continueOnError": True,
            },
        ],
        artifacts=[{"source": "/workspace/out.txt", "target": "./out/"}],
        cleanup="on-success",
        network={"policy": "egress", "publish": [{"host": 18080, "guest": 8080}]},
    )
    result = plan(spec, inventory("installed"))
    assert [s.id for s in result.steps] == [
        "boot",
        "copy-in.0",
        "copy-in.1",
        "exec.one",
        "exec.two",
        "copy-out.0",
        "cleanup",
    ]
    assert {s.action for s in result.steps} <= set(ACTIONS)
    one, two = result.step("exec.one"), result.step("exec.two")
    assert isinstance(one, ExecStep) and isinstance(two, ExecStep)
    assert one.env == {"A": "spec", "B": "step", "C": "step"}
    assert one.argv == ["/bin/sh", "-c", "echo $A"]
    assert (two.argv, two.cwd, two.timeout_seconds, two.continue_on_error) == (
        ["ls", "-la"],
        "/workspace",
        30,
        True,
    )
    copy_in = result.step("copy-in.0")
    assert copy_in.model_dump() == {
        "id": "copy-in.0",
        "action": "copy-in",
        "source": "./src",
        "target": "/workspace/src",
        "digest": None,
        "by": "agent",
    }
    boot = result.step("boot")
    assert isinstance(boot, BootStep)
    assert boot.network.policy == "egress" and boot.network.publish == [
        {"host": 18080, "guest": 8080}
    ]
    assert result.step("cleanup").model_dump()["policy"] == "on-success"


def test_spec_resources_win_over_defaults() -> None:
    result = plan(run_spec(resources={"vcpus": 2, "memoryMiB": 1024}), inventory("installed"))
    assert (result.resources.vcpus, result.resources.memory_mib) == (2, 1024)


def test_environment_document_cannot_be_planned() -> None:
    with pytest.raises(PlanError, match="Environment"):
        plan(environment_spec(), inventory("installed"))


def test_plan_is_deterministic_and_round_trips() -> None:
    first = render_json(plan(run_spec(), inventory("installed")))
    second = render_json(plan(run_spec(), inventory("installed")))
    assert first == second and first.endswith("}\n")
    data = json.loads(first)
    assert list(data) == sorted(data)
    assert plan_from_json(first) == plan(run_spec(), inventory("installed"))


def test_digest_covers_content() -> None:
    one = plan(run_spec(), inventory("installed"))
    other = plan(run_spec(timeoutSeconds=30), inventory("installed"))
    assert one.digest != other.digest and one.digest.startswith("sha256:")


def test_tampered_plan_is_refused() -> None:
    data = json.loads(render_json(plan(run_spec(), inventory("installed"))))
    data["resources"]["vcpus"] = 2
    with pytest.raises(PlanError, match="digest"):
        plan_from_json(json.dumps(data))


@pytest.mark.parametrize("text", ["not json", "[]", '{"kind": "Plan"}'])
def test_plan_from_json_rejects_garbage(text: str) -> None:
    with pytest.raises(PlanError):
        plan_from_json(text)


def test_installed_but_not_in_catalog_is_used_newest_first() -> None:
    installs = [
        InstalledEnvironment(
            name="custom:1",
            version=version,
            digest="sha256:" + digit * 64,
            content_digest="sha256:" + digit * 64,
        )
        for version, digit in [("1.2.0", "5"), ("1.10.0", "6"), ("1.9.1", "7")]
    ]
    result = plan(run_spec(environment="custom:1"), inventory("empty", installed=installs))
    assert result.applyable
    assert result.environment is not None
    assert (result.environment.version, result.environment.origin) == ("1.10.0", "installed")
