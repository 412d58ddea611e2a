"""``backend: auto`` on a cluster needs ``pyro-kvm`` unless TCG is allowed: resource
choice, placement before submission (each node's reason), the CLI flag and the SDK
option. A fake ``ray`` module stands in for the cluster: no Ray, no guest."""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path
from typing import Any

import pytest

from pyro.cluster.nodes import accepted_resources, choose_resource, placement_problems
from pyro.errors import PlanError, UsageError
from tests.unit.cluster.test_dispatch import make_jobs
from tests.unit.cluster.test_nodes import node


def test_auto_takes_tcg_only_when_allowed_and_prefers_kvm() -> None:
    assert accepted_resources("auto") == ("pyro-kvm",)
    assert accepted_resources("auto", allow_tcg=True) == ("pyro-kvm", "pyro-tcg")
    assert accepted_resources("qemu-kvm", allow_tcg=True) == ("pyro-kvm",)
    assert accepted_resources("qemu-tcg", allow_tcg=True) == ("pyro-tcg",)


def test_the_chosen_resource_is_the_one_with_more_units_free_kvm_on_a_tie() -> None:
    kvm, tcg = node("10.0.0.1", pyro_kvm=1, pyro_tcg=1), node("10.0.0.2", pyro_tcg=1)
    both = ("pyro-kvm", "pyro-tcg")
    assert choose_resource(both, [kvm, tcg], frozenset(), {"pyro-kvm": 1, "pyro-tcg": 1}) == (
        "pyro-kvm"
    )
    assert choose_resource(both, [kvm, tcg], frozenset(), {"pyro-kvm": 0, "pyro-tcg": 2}) == (
        "pyro-tcg"
    )
    assert choose_resource(both, [tcg], frozenset(), {}) == "pyro-tcg"
    # a retry avoiding the KVM node takes what the others offer; with nothing else, anywhere
    avoid = frozenset({str(kvm["NodeID"])[:12]})
    assert choose_resource(both, [kvm, tcg], avoid, {"pyro-kvm": 5}) == "pyro-tcg"
    assert choose_resource(both, [kvm], avoid, {}) == "pyro-kvm"
    dead = node("10.0.0.3", False, pyro_kvm=1)
    assert choose_resource(both, [dead, tcg], frozenset(), {"pyro-kvm": 9}) == "pyro-tcg"
    assert choose_resource(both, [], frozenset(), {}) == "pyro-kvm"


def test_placement_with_alternatives_names_them_and_every_nodes_reason() -> None:
    tcg_only = [node("10.0.0.1", pyro_tcg=1), node("10.0.0.2")]
    assert placement_problems([("pyro-kvm", "pyro-tcg")], tcg_only) == []
    (problem,) = placement_problems([("pyro-kvm",)], tcg_only)
    assert "no node offers pyro-kvm: 10.0.0.1" in problem
    assert "no pyro-kvm, has pyro-tcg" in problem and "has no pyro resources" in problem
    (problem,) = placement_problems([("pyro-kvm", "pyro-tcg")], [node("10.0.0.2")])
    assert problem.startswith("no node offers pyro-kvm or pyro-tcg: 10.0.0.2")


class FakeRay:
    """What RayExecutor uses of ``ray``: a cluster of fixed nodes; tasks never finish."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self._nodes = nodes
        self.submitted: list[dict[str, Any]] = []
        self.shut = False

    def init(self, **_: Any) -> None:
        pass

    def is_initialized(self) -> bool:
        return False

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes

    def available_resources(self) -> dict[str, float]:
        free: dict[str, float] = {}
        for record in self._nodes:
            for key, value in record["Resources"].items():
                free[key] = free.get(key, 0.0) + value
        return free

    def put(self, value: Any) -> Any:
        return value

    def shutdown(self) -> None:
        self.shut = True

    def remote(self, **_: Any) -> Any:
        ray = self

        class Task:
            def options(self, **options: Any) -> Any:
                class Call:
                    def remote(self, *args: Any) -> Any:
                        ray.submitted.append(options)

                        class Ref:
                            def future(self) -> concurrent.futures.Future[Any]:
                                return concurrent.futures.Future()

                        return Ref()

                return Call()

        return lambda _function: Task()


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Any:
    from pyro.cluster import ray_exec

    monkeypatch.setattr(ray_exec, "pin_environment", lambda spec: "oci://r/x@sha256:" + "0" * 64)

    def run(nodes: list[dict[str, Any]], allow_tcg: bool, **spec: Any) -> tuple[FakeRay, Any]:
        fake = FakeRay(nodes)
        monkeypatch.setitem(sys.modules, "ray", fake)
        jobs = make_jobs(2, **spec)
        try:
            executor = ray_exec.RayExecutor.connect("ray://h:1", jobs, allow_tcg=allow_tcg)
        except PlanError as error:
            return fake, error
        for job in jobs:
            executor.submit(job, 1, frozenset())
        return fake, executor

    return run


TCG_CLUSTER = [node("10.0.0.1", pyro_tcg=1), node("10.0.0.2", pyro_tcg=2)]


def test_auto_on_a_tcg_only_cluster_fails_before_submission_naming_each_node(
    connect: Any,
) -> None:
    fake, error = connect(TCG_CLUSTER, False)
    assert isinstance(error, PlanError) and fake.submitted == [] and fake.shut
    assert "no node offers pyro-kvm" in error.summary
    assert "10.0.0.1" in error.summary and "10.0.0.2" in error.summary
    assert "--allow-tcg" in (error.hint or "")


def test_auto_with_tcg_allowed_is_submitted_asking_for_tcg(connect: Any) -> None:
    fake, _ = connect(TCG_CLUSTER, True)
    assert [o["resources"] for o in fake.submitted] == [{"pyro-tcg": 1}] * 2


def test_with_tcg_allowed_auto_asks_for_kvm_where_more_of_it_is_free(connect: Any) -> None:
    fake, _ = connect([*TCG_CLUSTER, node("10.0.0.3", pyro_kvm=4, pyro_tcg=4)], True)
    assert [o["resources"] for o in fake.submitted] == [{"pyro-tcg": 1}] * 2  # 7 > 4
    fake, _ = connect([*TCG_CLUSTER, node("10.0.0.3", pyro_kvm=4)], True)
    assert [o["resources"] for o in fake.submitted] == [{"pyro-kvm": 1}] * 2  # 4 > 3


def test_allowing_tcg_does_not_make_a_named_kvm_backend_placeable(connect: Any) -> None:
    fake, error = connect(TCG_CLUSTER, True, backend="qemu-kvm")
    assert isinstance(error, PlanError) and fake.submitted == []
    assert "--allow-tcg" not in (error.hint or "")


def test_the_sdk_refuses_allow_tcg_without_a_cluster() -> None:
    from pyro.sdk import Pyro

    with pytest.raises(UsageError, match="allow_tcg is about a cluster's nodes"):
        Pyro(allow_tcg=True)


def test_the_cli_refuses_allow_tcg_without_a_cluster_but_not_from_its_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyro.cli.main import main

    monkeypatch.delenv("PYRO_CLUSTER", raising=False)
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    assert main(["apply", str(tmp_path / "never-read.yaml"), "--allow-tcg"]) == 125
    said = capsys.readouterr().err
    assert "--allow-tcg is about a cluster's nodes" in said and "Traceback" not in said
    monkeypatch.setenv("PYRO_CLUSTER_ALLOW_TCG", "1")  # set for every command: no error here
    assert main(["apply", str(tmp_path / "missing.yaml")]) == 125
    said = capsys.readouterr().err
    assert "--allow-tcg" not in said and "missing.yaml" in said
