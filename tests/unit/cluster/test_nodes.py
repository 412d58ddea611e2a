"""Node resources from doctor's findings, placement before submission, cluster addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyro.cluster.address import parse_cluster
from pyro.cluster.nodes import needed_resource, node_resources, placement_problems
from pyro.errors import UsageError


def backend(name: str, usable: bool = True, can_exec: bool = True) -> dict[str, Any]:
    return {"name": name, "usable": usable, "can_exec": can_exec}


def test_resources_follow_the_backends_that_can_run_a_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PYRO_START_SLOTS", "3")
    tcg_only = {"backends": [backend("qemu-kvm", can_exec=False), backend("qemu-tcg")]}
    assert node_resources(tcg_only) == {"pyro-backend-qemu-tcg": 3, "pyro-tcg": 3}
    kvm = {"backends": [backend("firecracker"), backend("qemu-kvm"), backend("qemu-tcg")]}
    assert node_resources(kvm) == {
        "pyro-backend-firecracker": 3,
        "pyro-backend-qemu-kvm": 3,
        "pyro-backend-qemu-tcg": 3,
        "pyro-kvm": 3,
        "pyro-tcg": 3,
    }
    assert node_resources({"backends": [backend("qemu-tcg", usable=False)]}) == {}


def test_auto_and_kvm_backends_need_kvm_and_only_tcg_takes_tcg() -> None:
    assert needed_resource("auto") == "pyro-kvm"
    assert needed_resource("qemu-kvm") == "pyro-kvm"
    assert needed_resource("firecracker") == "pyro-kvm"
    assert needed_resource("qemu-tcg") == "pyro-tcg"


def node(ip: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    return {
        "Alive": alive,
        "NodeID": ip.replace(".", "") * 4,
        "NodeManagerAddress": ip,
        "Resources": {"CPU": 2.0, **{k.replace("_", "-"): v for k, v in resources.items()}},
    }


def test_an_unplaceable_run_names_every_nodes_reason() -> None:
    nodes = [
        node("10.0.0.1", pyro_tcg=2),
        node("10.0.0.2", pyro_tcg=1),
        node("10.0.0.3", False, pyro_kvm=4),
    ]
    assert placement_problems(["pyro-tcg", "pyro-tcg"], nodes) == []
    (problem,) = placement_problems(["pyro-tcg", "pyro-kvm"], nodes)
    assert problem.startswith("no node offers pyro-kvm: 10.0.0.1 (")
    assert "no pyro-kvm, has pyro-tcg" in problem and "10.0.0.2" in problem
    assert "10.0.0.3" not in problem  # a dead node is no reason
    assert placement_problems(["pyro-kvm"], []) == [
        "no node offers pyro-kvm: the cluster has no alive node"
    ]


@pytest.mark.parametrize("address", ["ray://10.1.2.3:6379", "ray://head.example:10001"])
def test_a_cluster_address_is_ray_host_port(address: str) -> None:
    assert parse_cluster(address) == address


@pytest.mark.parametrize(
    "address", ["10.1.2.3:6379", "ray://head", "ray://h:0", "ray://h:99999", "http://h:1"]
)
def test_anything_else_is_refused_with_the_form_to_write(address: str) -> None:
    with pytest.raises(UsageError, match="is not a cluster address") as error:
        parse_cluster(address)
    assert "ray://HOST:PORT" in (error.value.hint or "")


def test_without_ray_a_cluster_run_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    from pyro.sdk import Pyro

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: s}\n"
        "spec: {environment: 'oci://127.0.0.1:1/x/y@sha256:" + "0" * 64 + "', "
        "backend: qemu-tcg, steps: [{name: t, run: 'true'}]}\n"
    )
    with pytest.raises(UsageError, match="needs Ray, which is not installed") as error:
        Pyro(cluster="ray://127.0.0.1:1").apply_many(spec)
    assert "pip install 'pyro-vm[ray]'" in (error.value.hint or "")


def test_prepull_without_a_cluster_is_refused(tmp_path: Path) -> None:
    from pyro.sdk import Pyro

    with pytest.raises(UsageError, match="prepull warms a cluster's nodes"):
        Pyro().apply_many(tmp_path / "never-read.yaml", prepull=True)
