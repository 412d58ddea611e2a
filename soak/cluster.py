"""``make soak``'s cluster cases (issue #23, Tier 2): a node killed mid-run, a node cut off.

Each case starts its own Ray cluster (``ray.cluster_utils``) of two one-slot TCG nodes
inside a network namespace this soak creates (``unshare -n``: Ray would otherwise swap
127.0.0.1 for the machine's address), applies a matrix of network-off instances through
the SDK, and strikes the node not holding the GCS while it runs an instance:

* ``cluster_node_kill``: SIGKILL to that node's raylet, by the pid the cluster started.
* ``cluster_partition``: that node lives in a nested namespace joined by a veth pair; the
  soak brings its end down until the GCS holds the node dead, then up again (the node's
  raylet then learns it is dead and ends, and its workers and their VMMs with it).

The kill case first checks, on these TCG-only nodes, that ``backend: auto`` without
``allow_tcg`` fails before submission naming both nodes. Ray's health checks are
shortened (``HEALTH``) so a lost node is known in seconds, not
≈64. A case passes when every instance ended once (a success, or a failure with its
reason), the lost instance was retried on the other node, no VMM process of either node
is alive, and no VM or scratch folder is left once the node's next pyro run has reaped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from helpers import raycluster as rc  # noqa: E402

CASES = ("cluster_node_kill", "cluster_partition")
#: Ray's GCS health checks of each raylet: every 1 s, 2 s to answer, dead after 5 misses.
HEALTH = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 2000,
    "health_check_failure_threshold": 5,
}
#: Long enough that a struck node's guest cannot finish before the node is lost.
INSTANCES, SECONDS = 4, 30


def run_cases(cases: list[str], work: Path) -> dict[str, Any]:
    """Run ``cases`` in a network namespace of their own; their reports by name (a case
    that could not run reports ``error``)."""
    from pyro.paths import cache_dir

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return {case: {"error": "unshare and ip are needed", "ok": False} for case in cases}
    out = work / "cluster.json"
    home = work / "cluster-home"
    home.mkdir(parents=True, exist_ok=True)
    ray_tmp = tempfile.mkdtemp(prefix="pyro-ray-", dir="/tmp")  # short: socket paths
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "RAY_"))},
        "PYRO_CACHE_DIR": str(cache_dir()),  # the shared cache, read only: debian:12
        "HOME": str(home),
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_BACKEND_LOG_LEVEL": "error",
        "PYTHONPATH": str(HERE.parent),
    }
    inner = [sys.executable, __file__, "--out", str(out), "--work", str(work), *cases]
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if not out.is_file():
        tail = (done.stdout + done.stderr)[-3000:]
        return {case: {"error": f"exit {done.returncode}: {tail}", "ok": False} for case in cases}
    reports: dict[str, Any] = json.loads(out.read_text())
    return reports


def _node_kill(root: Path, ref: str) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    head, victim = rc.PyroNode("head", root / "head"), rc.PyroNode("victim", root / "victim")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**head.ray_args(), "temp_dir": _ray_temp(), "_system_config": HEALTH},
    )
    try:
        victim.ray_node = cluster.add_node(**victim.ray_args())
        cluster.wait_for_nodes()
        pid = rc.raylet_pid(victim.ray_node)
        refusal = _auto_refused(f"ray://{cluster.address}", ref)
        report = rc.run_with_fault(
            cluster,
            f"ray://{cluster.address}",
            rc.matrix_spec(ref, INSTANCES, SECONDS),
            victim,
            victim.ray_node.node_id,
            strike=lambda: os.kill(pid, signal.SIGKILL),
        )
        report["auto_without_allow_tcg"] = refusal
        return _judge(report, victim.ray_node.node_id, [head, victim])
    finally:
        cluster.shutdown()


def _auto_refused(address: str, ref: str) -> str:
    """On these TCG-only nodes ``backend: auto`` without TCG allowed must fail before
    anything is submitted, naming both nodes; returns the refusal."""
    from pyro.errors import PlanError
    from pyro.sdk import Pyro

    spec = rc.matrix_spec(ref, 1, 0)
    spec["spec"]["backend"] = "auto"
    try:
        Pyro(cluster=address).apply_many(spec).close()
    except PlanError as error:
        return f"{error.summary} ({error.hint})"
    raise AssertionError("backend auto was placed on nodes offering no pyro-kvm")


def _partition(root: Path, ref: str) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    head, victim = rc.PyroNode("head", root / "head"), rc.PyroNode("victim", root / "victim")
    # Behind its link the node reaches no registry: it pulls the environment first, by
    # the digest the controller will pin.
    from pyro.oci.reference import parse_oci_ref, resolve

    parsed = parse_oci_ref(ref)
    pinned = f"oci://{parsed.registry}/{parsed.repository}@{resolve(ref)}"
    subprocess.run(
        [sys.executable, "-m", "pyro.cli", "env", "pull", pinned],
        env={**os.environ, **victim.env},
        check=True,
        capture_output=True,
        timeout=300,
    )
    with rc.host_link():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **head.ray_args(),
                "node_ip_address": rc.HOST_IP,
                "temp_dir": _ray_temp(),
                "_system_config": HEALTH,
            },
        )
        try:
            port = int(str(cluster.address).rsplit(":", 1)[1])
            with rc.nested_node(victim, port, dict(os.environ)):
                node_id = _wait_for_node(cluster, rc.NODE_IP)
                report = rc.run_with_fault(
                    cluster,
                    f"ray://{cluster.address}",
                    rc.matrix_spec(ref, INSTANCES, SECONDS),
                    victim,
                    node_id,
                    strike=lambda: rc.link(up=False),
                    heal=lambda: rc.link(up=True),
                )
                return _judge(report, node_id, [head, victim])
        finally:
            cluster.shutdown()


def _wait_for_node(cluster: Any, address: str) -> str:
    """The id of the node at ``address`` once the GCS holds it alive."""
    found: list[str] = []

    def joined() -> bool:
        found[:] = [
            n["NodeID"]
            for n in cluster.global_state.node_table()
            if n["NodeManagerAddress"] == address and n["Alive"]
        ]
        return bool(found)

    if not rc.wait_until(joined, 120):
        raise RuntimeError(f"the node at {address} never joined the cluster")
    return found[0]


def _judge(report: dict[str, Any], victim_id: str, nodes: list[rc.PyroNode]) -> dict[str, Any]:
    """The case's accounting, what the nodes left before and after their reap, and ok."""
    report["accounting"] = counts = rc.accounting(report, victim_id)
    rc.wait_until(lambda: not any(n.running() for n in nodes), 60)
    report["vmm_alive"] = [f for n in nodes for f in n.leftovers() if "VMM pid" in f]
    report["left_until_reaped"] = [f for n in nodes for f in n.leftovers()]
    report["reaped"] = sum(n.reap() for n in nodes)
    report["leaks"] = [f for n in nodes for f in n.leftovers()]
    refusal = report.get("auto_without_allow_tcg")
    report["ok"] = (
        (refusal is None or (refusal.count("no pyro-kvm, has pyro-tcg") == 2))
        and counts["lost"] == 0
        and counts["duplicates"] == 0
        and counts["failed_without_reason"] == 0
        and counts["retried_elsewhere"] >= 1
        and not report["vmm_alive"]
        and not report["leaks"]
    )
    return report


def _ray_temp() -> str:
    return str(Path(os.environ["RAY_TMPDIR"]) / "ray")


def _inside(cases: list[str], out: Path, work: Path) -> int:
    from helpers.registry import running_registry

    from pyro.sdk import Pyro

    calls: dict[str, Callable[[Path, str], dict[str, Any]]] = {
        "cluster_node_kill": _node_kill,
        "cluster_partition": _partition,
    }
    reports: dict[str, Any] = {}
    with running_registry(work / "cluster-registry") as registry:
        ref = f"oci://{registry.address}/pyro/debian:12"
        Pyro().push_environment("debian:12", ref)  # from the shared cache, read only
        for case in cases:
            started = time.monotonic()
            try:
                reports[case] = calls[case](work / case, ref)
            except Exception as error:  # the case could not run: its report says why
                reports[case] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            reports[case]["duration_s"] = round(time.monotonic() - started, 1)
            print(f"[soak] {case} done: ok={reports[case]['ok']}", file=sys.stderr)
    out.write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("cases", nargs="+", choices=CASES)
    args = parser.parse_args()
    sys.exit(_inside(args.cases, args.out, args.work))
