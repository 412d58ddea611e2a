"""``pyro apply --on ray://…`` on a real two-node Ray cluster, real TCG guests.

Ray replaces 127.0.0.1 with the machine's routable address, so every test here runs in
a network namespace of its own: the one test collected outside re-runs this module
under ``unshare -n`` (with ``lo`` up), where the registry, both Ray nodes and every guest
live and from where no packet leaves. HOME, Ray's temp folder and each node's
PYRO_CACHE_DIR/PYRO_STATE_DIR are the test's own temp folders; the cluster the session
fixture starts is the only one shut down (never ``ray stop``). One node pretends to have
KVM (``pyro-kvm`` and ``pyro-tcg``), the other offers ``pyro-tcg``; both pull the
environment from the registry into their own caches.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import raycluster
from tests.helpers.guest import vmm_processes
from tests.helpers.registry import running_registry

pytestmark = pytest.mark.guest

INSIDE = os.environ.get("PYRO_TEST_NETNS") == "1"
PYRO = [sys.executable, "-m", "pyro.cli"]


def test_the_cluster_tests_run_in_a_network_namespace_of_their_own(
    guest_install: object, tmp_path: Path
) -> None:
    if INSIDE:
        pytest.skip("already inside the namespace")
    pytest.importorskip("ray")
    from pyro.paths import cache_dir

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare and ip (util-linux, iproute2) are needed for a network namespace")
    home = tmp_path / "home"
    home.mkdir()
    # Ray's socket paths must stay under 108 bytes: its temp folder is a short one of ours.
    ray_tmp = tempfile.mkdtemp(prefix="pyro-ray-", dir="/tmp")
    env = {
        **os.environ,
        "PYRO_TEST_NETNS": "1",
        "PYRO_CACHE_DIR": str(cache_dir()),  # the shared cache, found before HOME moves
        "HOME": str(home),
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_BACKEND_LOG_LEVEL": "error",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    inner = [sys.executable, "-m", "pytest", __file__, "-q", "-s", "-p", "no:cacheprovider", "-x"]
    inner += ["--basetemp", str(tmp_path / "inner"), "-k", "inside"]
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner],
            capture_output=True,
            text=True,
            env=env,
            timeout=1500,
            stdin=subprocess.DEVNULL,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert " passed" in output and "skipped" not in output, output[-3000:]
    for line in output.splitlines():
        if " took " in line:
            print(line)
    print(f"cluster tests took {time.monotonic() - started:.0f} s")


@dataclass
class Node:
    cache: Path
    state: Path


@dataclass
class RayTestCluster:
    address: str
    registry: str
    nodes: list[Node]
    ray: Any  # the ray.cluster_utils.Cluster: a test may add (and kill) a node of its own
    root: Path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayTestCluster]:
    if not INSIDE:
        pytest.skip("runs only inside the test's network namespace")
    from ray.cluster_utils import Cluster

    from pyro.sdk import Pyro

    root = tmp_path_factory.mktemp("cluster")
    with running_registry(root / "registry") as registry:
        ref = f"oci://{registry.address}/pyro/debian:12"
        Pyro().push_environment("debian:12", ref)  # from the shared cache, read only
        nodes = [Node(root / f"{n}/cache", root / f"{n}/state") for n in ("a", "b")]
        resources = [{"pyro-kvm": 1, "pyro-tcg": 1}, {"pyro-tcg": 1}]
        args = [
            {
                "num_cpus": 1,
                "resources": extra,
                "include_dashboard": False,
                "env_vars": {
                    "PYRO_CACHE_DIR": str(node.cache),
                    "PYRO_STATE_DIR": str(node.state),
                    "PYRO_START_SLOTS": "1",
                },
            }
            for node, extra in zip(nodes, resources, strict=True)
        ]
        temp = Path(os.environ["RAY_TMPDIR"]) / "ray"
        ray_cluster = Cluster(
            initialize_head=True, head_node_args={**args[0], "temp_dir": str(temp)}
        )
        try:
            ray_cluster.add_node(**args[1])
            ray_cluster.wait_for_nodes()
            yield RayTestCluster(f"ray://{ray_cluster.address}", ref, nodes, ray_cluster, root)
        finally:
            ray_cluster.shutdown()


SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: ci}
spec:
  environment: "%(ref)s"
  backend: qemu-tcg
  timeoutSeconds: 300
  matrix:
    word: [alpha, beta]
    shard: {range: 4}
  files: [{source: in.txt, target: /work/in.txt}]
  steps:
    - name: test
      run: >-
        mkdir -p /work/out &&
        echo "{{ vars.word }}-{{ vars.shard }} $(cat /work/in.txt)" > /work/out/r.txt &&
        test "{{ vars.word }}{{ vars.shard }}" != beta1 || exit 3
  artifacts: [{source: /work/out/r.txt, target: out/}]
"""


def said(stderr: str) -> str:
    """pyro's own lines of a controller's stderr (not Ray's log lines)."""
    return "\n".join(line for line in stderr.splitlines() if "network_util" not in line)[-4000:]


def errors(stdout: str) -> str:
    """The errors of the results a controller printed (or what it printed)."""
    try:
        return json.dumps([r.get("error") for r in json.loads(stdout)])[-3000:]
    except (ValueError, AttributeError):
        return stdout[-3000:]


def controller(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "controller-state"
    return {**os.environ, "PYRO_STATE_DIR": str(state)}


def test_inside_prepull_fills_every_nodes_cache_before_the_run(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    # The first test of the session: both nodes' caches are still empty.
    for node in cluster.nodes:
        assert not list(node.cache.rglob("rootfs.ext4"))
    one = SPEC.replace("  matrix:\n    word: [alpha, beta]\n    shard: {range: 4}\n", "")
    one = one.replace("{{ vars.word }}-{{ vars.shard }}", "one").replace(
        "{{ vars.word }}{{ vars.shard }}", "one"
    )
    (tmp_path / "spec.yaml").write_text(one % {"ref": cluster.registry})
    (tmp_path / "in.txt").write_text("x\n")
    # Its copy-ins go as an OCI artifact (any size above 0 bytes): the registry path.
    env = {**controller(tmp_path), "PYRO_CLUSTER_ARTIFACT_MIN_BYTES": "0"}
    done = subprocess.run(
        [*PYRO, "apply", "spec.yaml", "--on", cluster.address, "--prepull", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, said(done.stderr) + errors(done.stdout)
    (result,) = json.loads(done.stdout)  # one run, on one node
    assert result["name"] == "ci"
    assert (tmp_path / "out" / "r.txt").read_text() == "one x\n"  # the copy-in arrived
    for node in cluster.nodes:  # yet both pulled
        assert list(node.cache.rglob("rootfs.ext4")), node.cache
    # The run's node pulled the copy-in artifact into its cache; the registry has it.
    pulled = [list((n.cache / "cluster-copy-in").glob("*.tar")) for n in cluster.nodes]
    assert sorted(len(p) for p in pulled) == [0, 1], pulled
    address = cluster.registry.removeprefix("oci://").split("/")[0]
    with urllib.request.urlopen(f"http://{address}/v2/pyro/debian/copy-in/tags/list") as r:
        tags = json.load(r)["tags"]
    assert len(tags) == 1 and tags[0].startswith("copy-in-"), tags


def test_inside_a_matrix_spreads_over_both_nodes_and_merges_back(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC % {"ref": cluster.registry})
    (tmp_path / "in.txt").write_text("shipped\n")
    started = time.monotonic()
    done = subprocess.run(
        [*PYRO, "apply", "spec.yaml", "--on", cluster.address, "--json", "--junit", "r.xml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=controller(tmp_path),
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    assert done.returncode == 3, said(done.stderr) + errors(
        done.stdout
    )  # the worst instance's exit code
    results = json.loads(done.stdout)
    assert len(results) == 8
    assert [r["name"] for r in results if not r["ok"]] == ["ci[word=beta,shard=1]"]
    nodes = {r["instance"]["node"] for r in results}
    assert len(nodes) == 2, f"all instances ran on {nodes}"
    assert {r["backend"] for r in results} == {"qemu-tcg"}
    for result in results:
        values = result["instance"]["values"]
        text = (tmp_path / "out" / result["name"] / "r.txt").read_text()
        assert text == f"{values['word']}-{values['shard']} shipped\n"
    suites = ET.parse(tmp_path / "r.xml").getroot().findall("testsuite")
    assert len(suites) == 8
    assert {
        p.get("value") for s in suites for p in s.iter("property") if p.get("name") == "node"
    } == nodes
    for node in cluster.nodes:  # each node pulled the environment into its own cache
        assert list((node.cache / "environments").rglob("rootfs.ext4")), sorted(
            node.cache.rglob("*")
        )[:20]
        assert vmm_processes(str(node.state)) == []
        vms = node.state / "vms"
        assert not vms.is_dir() or list(vms.iterdir()) == []
    print(f"8 instances over 2 nodes took {took:.1f} s")


def test_inside_cluster_doctor_shows_each_nodes_answer_and_catches_the_pretender(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    done = subprocess.run(
        [*PYRO, "cluster", "doctor", "--on", cluster.address, "--json"],
        capture_output=True,
        text=True,
        env=controller(tmp_path),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, said(done.stderr)  # joined with what doctor does not say
    reports = sorted(json.loads(done.stdout), key=lambda r: len(r["joined_with"]))
    assert [r["joined_with"] for r in reports] == [
        {"pyro-tcg": 1},
        {"pyro-kvm": 1, "pyro-tcg": 1},
    ]
    for report in reports:  # each node answered for itself: TCG, one start slot, no KVM
        assert report["resources"]["pyro-tcg"] == 1, report
        assert "pyro-kvm" not in report["resources"]
        assert not report["ok"]


def test_inside_the_sdk_yields_results_as_they_finish(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    from pyro.sdk import Pyro

    spec = {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "sdk"},
        "spec": {
            "environment": cluster.registry,
            "backend": "qemu-tcg",
            "matrix": {"pause": [0, 3]},
            "steps": [{"name": "t", "run": "sleep {{ vars.pause }}; echo {{ vars.pause }}"}],
        },
    }
    results = Pyro(cluster=cluster.address).apply_many(spec)
    assert results.total == 2
    first = next(results)
    assert first.name == "sdk[pause=0]" and first.stdout == "0\n"  # the quick one first
    (second,) = list(results)
    assert second.ok and second.stdout == "3\n"


def test_inside_an_environment_only_built_here_is_refused_with_a_hint_to_push_it(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC.replace('"%(ref)s"', "debian:12") % {})
    (tmp_path / "in.txt").write_text("x\n")
    env = {k: v for k, v in controller(tmp_path).items() if k != "PYRO_ENV_REGISTRY"}
    done = subprocess.run(
        [*PYRO, "apply", "spec.yaml", "--on", cluster.address],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 125, done.stderr
    assert "is only on this host" in done.stderr and "pyro env push debian:12" in done.stderr


def test_inside_ctrl_c_cancels_every_instance_and_leaves_no_vm_on_any_node(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    spec = SPEC.replace("steps:\n", "steps:\n    - {name: wait, run: 'sleep 600'}\n")
    (tmp_path / "spec.yaml").write_text(spec % {"ref": cluster.registry})
    (tmp_path / "in.txt").write_text("x\n")
    process = subprocess.Popen(
        [*PYRO, "apply", "spec.yaml", "--on", cluster.address],
        cwd=tmp_path,
        env=controller(tmp_path),
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def running() -> int:
        return sum(len(vmm_processes(str(node.state))) for node in cluster.nodes)

    deadline = time.monotonic() + 300
    while running() < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running() == 2, "an instance never started on each node"
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running() == 0
    for node in cluster.nodes:
        vms = node.state / "vms"
        assert not vms.is_dir() or list(vms.iterdir()) == [], node.state


def test_inside_a_task_lives_on_one_node_and_its_id_routes_there(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    from pyro.errors import StateError, UsageError
    from pyro.sdk import Pyro

    def vmms() -> dict[Path, int]:
        return {node.state: len(vmm_processes(str(node.state))) for node in cluster.nodes}

    def records() -> list[Path]:
        return [
            p
            for node in cluster.nodes
            if (node.state / "vms").is_dir()
            for p in (node.state / "vms").iterdir()
        ]

    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "hello.txt").write_text("seeded\n")
    pushed = tmp_path / "pushed"
    (pushed / "sub").mkdir(parents=True)
    (pushed / "sub" / "p.txt").write_text("pushed\n")
    started = time.monotonic()
    with Pyro(cluster=cluster.address) as pyro:
        info = pyro.create_task(cluster.registry, backend="qemu-tcg", seed_path=seed)
        where = pyro._cluster_tasks.where(info.id)  # type: ignore[union-attr]
        (state,) = [s for s, n in vmms().items() if n == 1]
        assert str(state) == where["state_dir"] and sum(vmms().values()) == 1
        chunks: list[bytes] = []
        first = pyro.exec_task(
            info.id, "cp hello.txt a && echo two >> a && echo one", on_stdout=chunks.append
        )
        assert first.exit_code == 0 and first.stdout == "one\n", first
        assert b"".join(chunks) == b"one\n"  # streamed back from the node
        second = pyro.exec_task(info.id, "cat a")
        assert second.stdout == "seeded\ntwo\n"  # the workspace persists between commands
        # run_in_vm, same signature, runs on a node too, over the same Ray connection.
        heard: list[bytes] = []
        ran = pyro.run_in_vm(
            cluster.registry,
            "echo ran-on-a-node",
            backend="qemu-tcg",
            on_stdout=lambda step, data: heard.append(data),
        )
        assert ran.ok and ran.stdout == "ran-on-a-node\n", ran.error
        assert ran.instance is not None and ran.instance.node and heard == [b"ran-on-a-node\n"]
        with pytest.raises(UsageError, match="stdin cannot be sent"):
            pyro.run_in_vm(cluster.registry, "cat", backend="qemu-tcg", stdin=b"x")
        pyro.push_task_dir(info.id, pushed, dest="/workspace/in")
        pyro.write_task_file(info.id, "/workspace/w.bin", b"\x00\x01written")
        assert pyro.read_task_file(info.id, "in/sub/p.txt") == b"pushed\n"
        assert pyro.read_task_file(info.id, "/workspace/w.bin") == b"\x00\x01written"
        names = {e.name for e in pyro.list_task_files(info.id, "/workspace")}
        assert {"a", "hello.txt", "in", "w.bin"} <= names
        assert pyro.status_task(info.id).state == "running"
        assert [e.argv[-1] for e in pyro.logs_task(info.id).entries][-2:] == [
            "cp hello.txt a && echo two >> a && echo one",
            "cat a",
        ]
        assert pyro.delete_task(info.id) is True
        assert sum(vmms().values()) == 0 and records() == []
        took = time.monotonic() - started
        print(f"a cluster task (create, 2 execs, a run_in_vm, files, delete) took {took:.1f} s")

        # Its actor dies (as with its node): a call fails at once, naming task and node.
        lost = pyro.create_task(cluster.registry, backend="qemu-tcg")
        where = pyro._cluster_tasks.where(lost.id)  # type: ignore[union-attr]
        os.kill(where["pid"], signal.SIGKILL)  # the actor process this test's cluster runs
        failed_at = time.monotonic()
        with pytest.raises(StateError) as caught:
            pyro.exec_task(lost.id, "true")
        noticed = time.monotonic() - failed_at
        print(f"a killed task actor was noticed after {noticed:.1f} s")
        assert noticed < 60
        assert lost.id in caught.value.summary and where["node"] in caught.value.summary
        assert "lost with node" in caught.value.summary
        # The task's VM is persistent, yet it does not outlive its killed actor for long.
        deadline = time.monotonic() + 60
        while (sum(vmms().values()) or records()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(vmms().values()) == 0 and records() == [], records()
        print(f"the killed actor's task was deleted after {time.monotonic() - failed_at:.1f} s")
    assert sum(vmms().values()) == 0 and records() == [], records()


def test_inside_a_killed_nodes_run_is_retried_on_another_and_no_vm_is_left(
    cluster: RayTestCluster,
) -> None:
    """The last test: it kills the third node it adds. Its instances ask for ``auto``
    with TCG allowed, so they also run on the nodes offering only ``pyro-tcg``."""
    victim = raycluster.PyroNode("c", cluster.root / "c")
    victim.ray_node = cluster.ray.add_node(**victim.ray_args())
    cluster.ray.wait_for_nodes()
    pid = raycluster.raylet_pid(victim.ray_node)
    spec = raycluster.matrix_spec(cluster.registry, 3, 6)
    spec["spec"]["backend"] = "auto"
    report = raycluster.run_with_fault(
        cluster.ray,
        cluster.address,
        spec,
        victim,
        victim.ray_node.node_id,
        strike=lambda: os.kill(pid, signal.SIGKILL),
        allow_tcg=True,
    )
    counts = raycluster.accounting(report, victim.ray_node.node_id)
    assert counts["lost"] == 0 and counts["duplicates"] == 0, report
    assert counts["succeeded"] == 3, report  # network off: the lost run ran again
    assert counts["retried_elsewhere"] >= 1 and counts["finished_on_victim"] == 0, report
    assert "detected_s" in report and "vmm_gone_s" in report, report
    assert {r["backend"] for r in report["results"]} == {"qemu-tcg"}  # auto, TCG allowed
    victim.reap()  # what the node's next run does first
    left = [f for node in cluster.nodes for f in vmm_processes(str(node.state))]
    assert left == [] and victim.leftovers() == [], (left, victim.leftovers())
    print(
        f"node kill: held dead after {report['detected_s']} s; 3 instances took "
        f"{report['total_s']} s"
    )
