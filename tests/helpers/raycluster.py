"""Faults on a test's own Ray cluster: a node killed mid-run, a node cut off.

Shared by tests/e2e/test_cluster.py and ``make soak`` (soak/cluster.py). Everything here
runs inside a network namespace the test created (``unshare -n``): a node is killed by
the pid of the raylet the test started (never by name, never ``ray stop``); a partitioned
node lives in a nested namespace of its own, joined to the test's by a veth pair whose
end the test brings down. :func:`run_with_fault` applies a matrix through the SDK while
the fault strikes the node running an instance, and accounts for every instance and for
whatever the runs left on each node (VMM processes, VM folders, scratch folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .guest import vmm_processes

#: The veth link between the test's namespace and a partitioned node's.
HOST_LINK, NODE_LINK = "pyro-soak-h", "pyro-soak-n"
#: The head's address, on this namespace's ``lo`` (so the head, the driver and the other
#: nodes here never lose it), reached from the nested node through the link's subnet.
HOST_IP = "10.231.0.1"
LINK_HOST_IP, NODE_IP = "10.231.1.1", "10.231.1.2"


@dataclass
class PyroNode:
    """One node's own folders: cache, state and temp folder (its runs' scratch)."""

    name: str
    root: Path
    resources: dict[str, int] = field(default_factory=lambda: {"pyro-tcg": 1})
    ray_node: Any = None  # the ray._private.node.Node the test's Cluster started
    process: subprocess.Popen[bytes] | None = None  # a nested node's `ray start --block`

    def __post_init__(self) -> None:
        for sub in ("cache", "state", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PYRO_CACHE_DIR": str(self.cache),
            "PYRO_STATE_DIR": str(self.state),
            "PYRO_START_SLOTS": "1",
            "TMPDIR": str(self.root / "tmp"),
        }

    def ray_args(self) -> dict[str, Any]:
        """``Cluster.add_node`` arguments for this node."""
        return {
            "num_cpus": 1,
            "resources": self.resources,
            "include_dashboard": False,
            "env_vars": self.env,
        }

    def running(self) -> int:
        """How many of this node's VMM processes are alive."""
        return len(vmm_processes(str(self.state)))

    def leftovers(self) -> list[str]:
        """What runs left here: VMM processes, VM folders, scratch folders."""
        found = [f"{self.name}: VMM pid {p.pid}" for p in vmm_processes(str(self.state))]
        vms = self.state / "vms"
        if vms.is_dir():
            found += [f"{self.name}: VM folder {p.name}" for p in vms.iterdir()]
        found += [
            f"{self.name}: scratch {p.name}" for p in (self.root / "tmp").glob("pyro-instance-*")
        ]
        return found

    def reap(self) -> int:
        """What the node's next pyro run does first (and a cancel on every node): delete
        what dead runs left. Returns how many things it deleted."""
        done = subprocess.run(
            [sys.executable, "-c", "from pyro.cluster.worker import reap; print(reap())"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return int(done.stdout.split()[-1])


def raylet_pid(ray_node: Any) -> int:
    """The pid of the raylet a test's ``Cluster`` started for ``ray_node``."""
    from ray._private import ray_constants

    (info,) = ray_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET]
    return int(info.process.pid)


def node_alive(cluster: Any, node_id: str) -> bool | None:
    """Whether the GCS of the test's ``Cluster`` holds node ``node_id`` (hex) alive
    (None: not known); asked through the cluster's own state client, not a driver's."""
    for node in cluster.global_state.node_table():
        if node["NodeID"] == node_id:
            return bool(node["Alive"])
    return None


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def matrix_spec(environment: str, count: int, seconds: int) -> dict[str, Any]:
    """``count`` instances, network off (a lost node's run is retried), ``seconds`` long."""
    return {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "fault"},
        "spec": {
            "environment": environment,
            "backend": "qemu-tcg",
            "timeoutSeconds": 600,
            "retries": 1,
            "matrix": {"n": {"range": count}},
            "steps": [{"name": "work", "run": f"sleep {seconds}; echo done {{{{ vars.n }}}}"}],
        },
    }


def run_with_fault(
    cluster: Any,
    address: str,
    spec: dict[str, Any],
    victim: PyroNode,
    victim_id: str,
    strike: Callable[[], None],
    heal: Callable[[], None] | None = None,
    timeout: float = 600,
    allow_tcg: bool = False,
) -> dict[str, Any]:
    """Apply ``spec`` on the test's ``cluster`` at ``address``; once ``victim`` runs an
    instance, ``strike`` it; once the GCS holds it dead, ``heal`` (if any).

    Returns each result's name, ok, attempt, node, backend and error, and the times in
    seconds from the strike: ``detected_s`` (the node held dead), ``vmm_gone_s`` (its
    VMMs ended), ``node_ended_s`` (a nested node's processes ended); ``total_s`` is from
    the first submission to the last result."""
    from pyro.sdk import Pyro

    results: list[Any] = []
    failure: list[BaseException] = []
    started = time.monotonic()
    stream = Pyro(cluster=address, allow_tcg=allow_tcg).apply_many(spec)

    def collect() -> None:
        try:
            results.extend(stream)
        except BaseException as error:  # reported by the caller, not lost in a thread
            failure.append(error)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    report: dict[str, Any] = {"expected": stream.total}
    try:
        if not wait_until(lambda: victim.running() >= 1 or not collector.is_alive(), 300):
            raise AssertionError(f"no instance started on {victim.name} in 300 s")
        if not collector.is_alive():
            said = [(r.name, r.instance and r.instance.node, r.error) for r in results]
            raise AssertionError(f"no instance started on {victim.name}: {said or failure}")
        time.sleep(1.0)  # its guest is running the step now
        struck = time.monotonic()
        strike()
        if wait_until(lambda: node_alive(cluster, victim_id) is False, 180):
            report["detected_s"] = round(time.monotonic() - struck, 1)
        if heal is not None:
            heal()
        if wait_until(lambda: victim.running() == 0, 180):
            report["vmm_gone_s"] = round(time.monotonic() - struck, 1)
        process = victim.process  # a nested node's `ray start`: it ends with its raylet
        if process is not None and wait_until(lambda: process.poll() is not None, 180):
            report["node_ended_s"] = round(time.monotonic() - struck, 1)
        collector.join(timeout)
    finally:
        if collector.is_alive():
            stream.close()  # cancels what still runs
            collector.join(60)
    if failure:
        raise failure[0]
    report["total_s"] = round(time.monotonic() - started, 1)
    report["results"] = [
        {
            "name": r.name,
            "ok": r.ok,
            "attempt": r.instance.attempt if r.instance else None,
            "node": r.instance.node if r.instance else None,
            "backend": r.backend,
            "error": (r.error or {}).get("type"),
            "reason": (r.error or {}).get("message"),
        }
        for r in results
    ]
    return report


def accounting(report: dict[str, Any], victim_id: str) -> dict[str, Any]:
    """Every instance ended once, as a success or a failure with a reason; which retried."""
    results = report["results"]
    names = [r["name"] for r in results]
    retried = [r for r in results if (r["attempt"] or 1) > 1]
    return {
        "instances": report["expected"],
        "results": len(results),
        "lost": report["expected"] - len(set(names)),
        "duplicates": len(names) - len(set(names)),
        "failed_without_reason": sum(1 for r in results if not r["ok"] and not r["reason"]),
        "succeeded": sum(1 for r in results if r["ok"]),
        "retried": len(retried),
        "retried_elsewhere": sum(1 for r in retried if r["node"] != victim_id[:12]),
        "finished_on_victim": sum(1 for r in results if r["node"] == victim_id[:12]),
    }


@contextlib.contextmanager
def nested_node(node: PyroNode, gcs_port: int, env: dict[str, str]) -> Iterator[PyroNode]:
    """``node`` as a Ray node in a network namespace of its own, joined to this one by a
    veth pair (this side ``HOST_IP``, which the head must listen on): bring
    :data:`HOST_LINK` down to cut it off. Stopped by its process group at the end."""
    script = (
        f"while ! ip link show {NODE_LINK} >/dev/null 2>&1; do sleep 0.1; done; "
        f"ip link set lo up && ip addr add {NODE_IP}/24 dev {NODE_LINK} && "
        f"ip link set {NODE_LINK} up && ip route add {HOST_IP}/32 via {LINK_HOST_IP} && "
        'exec "$@"'
    )
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        f"--address={HOST_IP}:{gcs_port}",
        f"--node-ip-address={NODE_IP}",
        "--num-cpus=1",
        f"--resources={json.dumps(node.resources)}",
        f"--object-store-memory={150 * 1024 * 1024}",
        "--disable-usage-stats",
        "--block",
    ]
    log = open(node.root / "ray-start.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        node.process = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", script, "sh", *command],
            env={**env, **node.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    try:
        subprocess.run(["ip", "link", "set", NODE_LINK, "netns", str(node.process.pid)], check=True)
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGTERM)
        try:
            node.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(30)


@contextlib.contextmanager
def host_link() -> Iterator[None]:
    """``HOST_IP`` on ``lo``, and the veth pair a nested node joins through (this side
    up, ``LINK_HOST_IP``)."""
    subprocess.run(["ip", "addr", "add", f"{HOST_IP}/32", "dev", "lo"], check=True)
    subprocess.run(
        ["ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK], check=True
    )
    try:
        subprocess.run(["ip", "addr", "add", f"{LINK_HOST_IP}/24", "dev", HOST_LINK], check=True)
        link(up=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", HOST_LINK], check=False, capture_output=True)
        subprocess.run(["ip", "addr", "del", f"{HOST_IP}/32", "dev", "lo"], check=False)


def link(*, up: bool) -> None:
    """Bring this namespace's end of the nested node's link up or down (nothing to do
    when the link is gone: the nested node ended, and its namespace with it)."""
    subprocess.run(
        ["ip", "link", "set", HOST_LINK, "up" if up else "down"], check=False, capture_output=True
    )
