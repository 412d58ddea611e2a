"""The executor, ``apply(plan)``, driven with fake guests (tests/unit/tasks/fakes.py).

Plans are made the way ``pyro plan`` makes them (prepare, gather, planner) from a spec in a
temporary folder, against a real environment cache holding a tiny fake install; only the
host's VMM facts are fixed, so nothing here depends on QEMU or KVM. The VM registry is
the real on-disk one with started VMs served by fake agents. Real guests apply plans in
tests/e2e/test_run.py.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

import pyro.environments.service as service
import pyro.guest.build as agent_build
import pyro.host.gather as gather
import pyro.oci as oci
from pyro.environments.cache.store import Cache, Install
from pyro.errors import GuestError, PlanError, StalePlanError
from pyro.execute.apply import ApplyOptions, apply
from pyro.execute.prepare import make_plan, prepare
from pyro.plan.inventory import BackendInfo, HostInfo
from pyro.plan.model import BuildStep, Plan, plan_from_json, render_json, seal
from tests.unit.tasks.fakes import FakeAgent, FakeGuest, FakeRegistry

ROOTFS = b"rootfs bytes " * 100
KERNEL = b"kernel bytes " * 100


class Host:
    """One test's host: a cache, a VM registry of fake guests, a folder for specs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = Cache(root / "cache")
        self.registry = FakeRegistry(root / "state")
        self.project = root / "project"
        self.project.mkdir()
        self.events: list[tuple[str, str, dict[str, str]]] = []

    def install(self, name: str = "debian:12", *, rootfs: bytes = ROOTFS, **meta: Any) -> Install:
        staged = self.root / f"staged-{len(os.listdir(self.root))}"
        staged.mkdir()
        (staged / "vmlinux").write_bytes(KERNEL)
        (staged / "rootfs.ext4").write_bytes(rootfs)
        return self.cache.install(name, staged, {"version": "1.0.0", **meta})

    def spec(self, body: str, name: str = "run.yaml") -> Path:
        path = self.project / name
        path.write_text(textwrap.dedent(body))
        return path

    def plan(self, spec: Path) -> Plan:
        return make_plan(prepare(spec), resolve_remote=False)

    def apply(self, plan: Plan, **options: Any) -> Any:
        def on_event(group: str, phase: str, fields: Any) -> None:
            self.events.append((group, phase, dict(fields)))

        return apply(plan, ApplyOptions(registry=self.registry, on_event=on_event, **options))

    def guest(self) -> FakeGuest:
        (guest,) = self.registry.guests.values()
        return guest


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    made = Host(tmp_path)
    monkeypatch.setenv("PYRO_CACHE_DIR", str(made.cache.root))
    monkeypatch.setenv("PYRO_STATE_DIR", str(made.registry.root))
    monkeypatch.setenv("PYRO_WARM", "0")  # cold boots: registry.start serves the fake agent
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    initrd = tmp_path / "agent.cpio"
    initrd.write_bytes(b"initrd")
    monkeypatch.setattr(agent_build, "build_agent_initrd", lambda cache_root=None: initrd)
    monkeypatch.setattr(
        gather, "probe_host", lambda: HostInfo(arch="x86_64", cpus=2, memory_mib=4096, kvm="none")
    )
    monkeypatch.setattr(
        gather, "probe_backends", lambda: [BackendInfo(name="qemu-tcg", usable=True)]
    )
    made.install()
    return made


RUN = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: t}
spec:
  environment: "debian:12"
  files:
    - {source: in, target: /work/in}
    - {source: note.txt, target: /work/}
  steps:
    - {name: greet, argv: [echo, hello]}
    - {name: where, argv: [pwd], cwd: /work}
  artifacts:
    - {source: /work/note.txt, target: out/}
"""


SIMPLE = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: t}
spec:
  environment: "debian:12"
  steps: [{name: e, argv: [echo, hi]}]
"""


def _inputs(project: Path) -> None:
    (project / "in" / "sub").mkdir(parents=True)
    (project / "in" / "a.txt").write_text("a")
    (project / "in" / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (project / "in" / "sub" / "run.sh").chmod(0o755)
    (project / "note.txt").write_text("note")


def _statuses(result: Any) -> dict[str, str]:
    return {step.id: step.status for step in result.steps}


# --- each step kind -----------------------------------------------------------------------


def test_every_step_kind_runs_in_order_and_the_vm_is_deleted(host: Host) -> None:
    _inputs(host.project)
    plan = host.plan(host.spec(RUN))
    result = host.apply(plan)
    assert result.ok and result.exit_code == 0 and result.error is None
    assert [s.id for s in result.steps] == [
        "boot",
        "copy-in.0",
        "copy-in.1",
        "exec.greet",
        "exec.where",
        "copy-out.0",
    ]
    assert set(_statuses(result).values()) == {"ok"}
    greet = result.steps[3]
    assert (greet.stdout, greet.exit_code) == ("hello\n", 0)
    assert result.steps[4].stdout == "/work\n"
    # The run's own stdout/stderr are the last exec step's (it read like subprocess.run).
    assert (result.stdout, result.stderr) == ("/work\n", "")
    guest = host.guest()
    assert guest.files["/work/in/a.txt"] == b"a"
    assert guest.modes["/work/in/sub/run.sh"] == 0o755
    assert guest.files["/work/note.txt"] == b"note"
    assert (host.project / "out" / "note.txt").read_text() == "note"
    assert result.environment_digest == host.cache.lookup("debian:12").content_digest  # type: ignore[union-attr]
    assert host.registry.list() == []  # cleanup: always
    phases = [phase for _, phase, _ in host.events]
    assert phases[:2] == ["create", "start"] and phases[-1] == "cleanup"


def test_output_streams_to_the_sinks_as_it_comes(host: Host) -> None:
    plan = host.plan(host.spec(SIMPLE))
    seen: list[tuple[str, bytes]] = []
    result = host.apply(plan, on_stdout=lambda step, data: seen.append((step, data)))
    assert result.ok
    assert b"".join(data for _, data in seen) == b"hi\n"
    assert {step for step, _ in seen} == {"exec.e"}


def test_pull_step_installs_then_boots(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = "oci://127.0.0.1:5000/pyro/custom:1"
    digest = "sha256:" + "a" * 64
    pulled = host.install(ref, source=f"{ref}@{digest}")
    monkeypatch.setattr(oci, "resolve", lambda asked: digest)
    asked: list[str] = []
    told: list[service.ProgressEvent] = []

    def pull(value: str, progress: Any = None, **_: Any) -> Install:
        asked.append(value)
        progress(service.ProgressEvent("install", value))
        return pulled

    monkeypatch.setattr(service, "pull", pull)
    # the plan pulls: pretend nothing is installed while planning
    monkeypatch.setattr(gather, "_installed", lambda: [])
    plan = make_plan(prepare(host.spec(SIMPLE.replace('"debian:12"', ref))))
    assert plan.steps[0].action == "pull"
    result = host.apply(plan, on_pull=told.append)
    assert result.ok, result.error
    assert asked == [ref]
    assert [event.phase for event in told] == ["install"]  # the pull's own progress, passed on
    assert _statuses(result)["pull"] == "ok"


def test_a_pull_that_finds_another_manifest_fails_the_step(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = "oci://127.0.0.1:5000/pyro/custom:1"
    pulled = host.install(ref, source=f"{ref}@sha256:{'b' * 64}")
    monkeypatch.setattr(oci, "resolve", lambda asked: "sha256:" + "a" * 64)
    monkeypatch.setattr(service, "pull", lambda value, **_: pulled)
    monkeypatch.setattr(gather, "_installed", lambda: [])
    plan = make_plan(prepare(host.spec(SIMPLE.replace('"debian:12"', ref))))
    result = host.apply(plan)
    assert not result.ok and result.failed_step == "pull"
    assert result.error["type"] == "StalePlanError"
    assert _statuses(result) == {"pull": "error", "boot": "skipped", "exec.e": "skipped"}
    assert host.registry.list() == []


LOCAL_ENV = """\
apiVersion: pyro/v1
kind: Environment
metadata: {name: "local:1"}
spec:
  version: "0.1.0"
  kernel: {fragment: kernels/extra.config}
  rootfs: {packages: [git]}
---
apiVersion: pyro/v1
kind: Run
metadata: {name: t}
spec:
  environment: "local:1"
  steps: [{name: e, argv: [echo, hi]}]
"""


def _build_plan(host: Host) -> Plan:
    (host.project / "kernels").mkdir(exist_ok=True)
    (host.project / "kernels" / "extra.config").write_text("CONFIG_X=y\n")
    return host.plan(host.spec(LOCAL_ENV))


def test_build_step_builds_the_document_the_plan_carries(
    host: Host, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = _build_plan(host)
    build = plan.steps[0]
    assert isinstance(build, BuildStep) and build.folder == "."
    built = host.install("local:1")
    calls: list[tuple[str, Any, Path]] = []

    def fake_build(value: str, *, spec: Any = None, base_dir: Path, **_: Any) -> Install:
        calls.append((value, spec, base_dir))
        return built

    monkeypatch.setattr(service, "build", fake_build)
    (host.project / "run.yaml").unlink()  # apply reads no spec file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = host.apply(plan)
    assert result.ok, result.error
    assert calls == [("local:1", build.document, host.project)]


def test_the_plan_s_warnings_are_told_first_and_kept_in_the_result(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.loads(render_json(_build_plan(host)))
    body.pop("digest")
    warning = {"code": "environment.pull-unavailable", "message": "slow build", "hint": "h"}
    body["warnings"] = [warning]
    built = host.install("local:1")
    monkeypatch.setattr(service, "build", lambda value, **_: built)
    result = host.apply(seal(**body))
    assert result.ok, result.error
    assert [w.model_dump() for w in result.warnings] == [{**warning, "pointer": None}]
    assert host.events[0] == ("plan", "warning", {"message": "slow build", "hint": "h"})


def test_no_build_refuses_a_plan_that_builds_before_anything_is_done(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _build_plan(host)  # planned while builds were allowed
    calls: list[str] = []
    monkeypatch.setattr(service, "build", lambda value, **_: calls.append(value))
    monkeypatch.setenv("PYRO_NO_BUILD", "1")
    with pytest.raises(PlanError, match=r"builds environment local:1 locally, but builds are off"):
        host.apply(plan)
    assert calls == [] and host.registry.list() == [] and host.events == []


# --- a failing step, cleanup ------------------------------------------------------------

FAILING = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: t}
spec:
  environment: "debian:12"
  cleanup: CLEANUP
  files: [{source: note.txt, target: /work/}]
  steps:
    - {name: soft, argv: [fail-stderr], continueOnError: true}
    - {name: hard, argv: ["false"]}
    - {name: never, argv: [echo, never]}
  artifacts: [{source: /work/note.txt, target: out/}]
"""


def test_a_failing_step_gives_a_partial_result(host: Host) -> None:
    (host.project / "note.txt").write_text("note")
    plan = host.plan(host.spec(FAILING.replace("CLEANUP", "always")))
    result = host.apply(plan)
    assert not result.ok
    assert (result.failed_step, result.exit_code, result.error) == ("exec.hard", 1, None)
    assert _statuses(result) == {
        "boot": "ok",
        "copy-in.0": "ok",
        "exec.soft": "failed",  # continueOnError: the run goes on
        "exec.hard": "failed",
        "exec.never": "skipped",
        "copy-out.0": "ok",  # artifacts are still copied out after a failure
    }
    assert result.steps[2].stderr == "boom\n"
    # The run's output is the failed step's, not the earlier step that was let fail.
    assert (result.stdout, result.stderr) == ("", "")
    assert (host.project / "out" / "note.txt").read_text() == "note"
    assert host.registry.list() == []


def test_each_step_is_told_as_it_begins(host: Host) -> None:
    _inputs(host.project)
    plan = host.plan(host.spec(RUN))
    told: list[tuple[int, int, str]] = []
    result = host.apply(
        plan, on_step=lambda number, total, step: told.append((number, total, step))
    )
    assert result.ok
    total = len(plan.steps)
    assert [(n, t) for n, t, _ in told] == [(n, total) for n in range(1, total + 1)]
    assert [step_id for _, _, step_id in told] == [step.id for step in plan.steps]
    assert [step_id for _, _, step_id in told][-1] == "cleanup"


def test_cleanup_on_success_keeps_a_failed_run_s_vm(host: Host) -> None:
    (host.project / "note.txt").write_text("note")
    result = host.apply(host.plan(host.spec(FAILING.replace("CLEANUP", "on-success"))))
    assert not result.ok and result.vm_kept
    (record,) = host.registry.list()
    assert record.id == result.vm_id and not record.ephemeral
    host.registry.delete(record.id)


def test_a_guest_error_fails_the_step_and_the_vm_is_still_deleted(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: FakeAgent, argv: Any, **kwargs: Any) -> Any:
        raise GuestError("guest agent connection closed (test)")

    monkeypatch.setattr(FakeAgent, "exec", crash)
    (host.project / "note.txt").write_text("note")
    result = host.apply(host.plan(host.spec(FAILING.replace("CLEANUP", "never"))))
    assert not result.ok and result.failed_step == "exec.soft" and result.exit_code is None
    assert result.error is not None and result.error["type"] == "GuestError"
    assert _statuses(result)["exec.hard"] == "skipped"
    # cleanup 'never' keeps the VM of a finished run; this one is kept for debugging too
    assert result.vm_kept
    host.registry.delete(result.vm_id)


def test_ctrl_c_deletes_the_vm_whatever_the_cleanup_policy(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(self: FakeAgent, argv: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(FakeAgent, "exec", interrupt)
    (host.project / "note.txt").write_text("note")
    plan = host.plan(host.spec(FAILING.replace("CLEANUP", "never")))
    with pytest.raises(KeyboardInterrupt):
        host.apply(plan)
    assert host.registry.list() == []


def test_a_boot_failure_fails_the_boot_step_and_skips_the_rest(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyro.errors import BootError

    def no_boot(self: FakeRegistry, vm_id: str, **kwargs: Any) -> Any:
        raise BootError("guest did not boot (test)")

    monkeypatch.setattr(FakeRegistry, "start", no_boot)
    (host.project / "note.txt").write_text("note")
    result = host.apply(host.plan(host.spec(FAILING.replace("CLEANUP", "always"))))
    assert not result.ok and result.failed_step == "boot"
    assert _statuses(result) == {
        "boot": "error",
        "copy-in.0": "skipped",
        "exec.soft": "skipped",
        "exec.hard": "skipped",
        "exec.never": "skipped",
        "copy-out.0": "skipped",  # no guest to copy from
    }
    assert host.registry.list() == []


# --- the plan is all apply reads ----------------------------------------------------------


def test_a_saved_plan_applies_from_another_directory(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inputs(host.project)
    saved = render_json(host.plan(host.spec(RUN)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = host.apply(plan_from_json(saved))
    assert result.ok, result.error
    assert host.guest().files["/work/in/a.txt"] == b"a"
    assert (host.project / "out" / "note.txt").read_text() == "note"
    assert list(elsewhere.iterdir()) == []


def test_the_same_bytes_in_another_cache_satisfy_the_plan(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another machine: its own cache, the same kernel and rootfs installed another way
    (pulled from a registry: another manifest, another install digest)."""
    plan = host.plan(host.spec(SIMPLE))
    other = Cache(tmp_path / "other-cache")
    staged = tmp_path / "other-staged"
    staged.mkdir()
    (staged / "vmlinux").write_bytes(KERNEL)
    (staged / "rootfs.ext4").write_bytes(ROOTFS)
    there = other.install(
        "debian:12",
        staged,
        {"version": "1.0.0", "source": "oci://registry.example/pyro/debian:12@sha256:" + "c" * 64},
    )
    here = host.cache.lookup("debian:12")
    assert here is not None and there.digest != here.digest
    monkeypatch.setenv("PYRO_CACHE_DIR", str(other.root))
    result = host.apply(plan)
    assert result.ok, result.error
    assert result.environment_digest == there.content_digest == here.content_digest


def test_a_plan_without_a_spec_folder_refuses_host_paths(host: Host) -> None:
    (host.project / "note.txt").write_text("note")
    plan = host.plan(host.spec(FAILING.replace("CLEANUP", "always")))
    body = json.loads(render_json(plan))
    body.pop("digest")
    body["spec_dir"] = None
    with pytest.raises(PlanError, match="records no spec folder"):
        host.apply(seal(**body))
    # artifacts alone need a folder too, checked before anything boots ...
    body["steps"] = [step for step in body["steps"] if step["action"] != "copy-in"]
    with pytest.raises(PlanError, match="records no spec folder"):
        host.apply(seal(**body))
    assert host.registry.list() == [] and host.registry.guests == {}
    # ... unless the caller gives one (a confined caller's fresh folder)
    into = host.root / "artifacts"
    into.mkdir()
    result = host.apply(seal(**body), artifacts_dir=into)
    assert _statuses(result)["copy-out.0"] == "error"  # nothing was copied in to copy out
    assert "no such file" in result.error["message"].lower()


# --- stale plans: nothing is done ---------------------------------------------------------


def _assert_nothing_done(host: Host) -> None:
    assert host.registry.list() == [] and host.registry.guests == {}


def test_changed_agent_sources_are_a_stale_plan(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = host.plan(host.spec(SIMPLE))
    monkeypatch.setattr(agent_build, "agent_source_digest", lambda: "sha256:" + "9" * 64)
    with pytest.raises(StalePlanError, match="guest agent changed") as stale:
        host.apply(plan)
    assert "pyro plan" in stale.value.hint
    _assert_nothing_done(host)


def test_changed_environment_content_is_a_stale_plan(host: Host) -> None:
    plan = host.plan(host.spec(SIMPLE))
    host.install(rootfs=b"another rootfs")
    with pytest.raises(StalePlanError, match="debian:12 now holds other content"):
        host.apply(plan)
    _assert_nothing_done(host)


def test_an_environment_gone_since_planning_is_a_stale_plan(host: Host) -> None:
    plan = host.plan(host.spec(SIMPLE))
    for name in os.listdir(host.cache.environments_dir):
        (host.cache.environments_dir / name / "current.json").unlink()
    with pytest.raises(StalePlanError, match="no longer installed") as stale:
        host.apply(plan)
    assert "pyro env pull debian:12" in stale.value.hint
    _assert_nothing_done(host)


def test_changed_build_inputs_are_a_stale_plan(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _build_plan(host)
    monkeypatch.setattr(service, "build", lambda *a, **k: pytest.fail("built a stale plan"))
    (host.project / "kernels" / "extra.config").write_text("CONFIG_X=n\n")
    with pytest.raises(StalePlanError, match="build inputs of environment local:1 changed"):
        host.apply(plan)
    (host.project / "kernels" / "extra.config").unlink()
    with pytest.raises(StalePlanError, match="cannot read kernel fragment"):
        host.apply(plan)
    _assert_nothing_done(host)


def test_a_build_document_edited_in_the_plan_is_a_stale_plan(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resealing an edited plan makes its digest match again; the pinned spec digest
    still tells that the document is not the one planned."""
    plan = _build_plan(host)
    monkeypatch.setattr(service, "build", lambda *a, **k: pytest.fail("built a stale plan"))
    body = json.loads(render_json(plan))
    body.pop("digest")
    body["steps"][0]["document"]["spec"]["rootfs"]["packages"] = ["git", "curl"]
    with pytest.raises(StalePlanError, match="build inputs of environment local:1 changed"):
        host.apply(seal(**body))
    _assert_nothing_done(host)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: (p / "in" / "a.txt").write_text("b"), "changed: sha256:"),
        (lambda p: (p / "in" / "sub" / "run.sh").chmod(0o644), "changed: sha256:"),
        (lambda p: (p / "in" / "new.txt").write_text("new"), "changed: sha256:"),
        (lambda p: (p / "note.txt").unlink(), "is gone"),
    ],
    ids=["content", "mode", "added-file", "removed"],
)
def test_a_changed_copy_in_source_is_a_stale_plan(host: Host, change: Any, message: str) -> None:
    _inputs(host.project)
    plan = host.plan(host.spec(RUN))
    change(host.project)
    with pytest.raises(StalePlanError, match=message) as stale:
        host.apply(plan)
    assert "copy-in source" in stale.value.summary
    _assert_nothing_done(host)


def test_a_copy_in_source_that_appeared_since_planning_is_a_stale_plan(host: Host) -> None:
    (host.project / "in").mkdir()
    plan = host.plan(host.spec(RUN))  # note.txt is missing: planned without a digest
    (host.project / "note.txt").write_text("note")
    with pytest.raises(StalePlanError, match=r"'note.txt' .* did not exist"):
        host.apply(plan)
    _assert_nothing_done(host)


def test_a_copy_in_source_missing_then_and_now_fails_its_step(host: Host) -> None:
    (host.project / "in").mkdir()
    result = host.apply(host.plan(host.spec(RUN)))
    assert not result.ok and result.failed_step == "copy-in.1"
    assert "does not exist" in result.error["message"]
    assert host.registry.list() == []
