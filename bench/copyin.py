"""How a cluster run's copy-in tar reaches a node: Ray's object store against an OCI artifact.

For tars of 1, 16, 64 and 256 MiB (incompressible bytes), on a two-node
``ray.cluster_utils.Cluster`` and a local ``docker-registry`` on this machine, each timed
from the controller's source folder to the tar held on the other node:

* ``object``   pack in memory, ``ray.put``, a task on the other node ``ray.get``s it
* ``artifact`` pack to a file, push (:func:`pyro.cluster.copyin.push`), a task on the
               other node pulls it by digest into a fresh cache (:func:`~pyro.cluster.copyin.fetch`)

and the resident memory of the node's worker process holding the tar. No guest boots.
Like bench/cluster.py it re-runs itself in a network namespace of its own (``unshare -n``).
Run: ``python bench/copyin.py`` (prints one JSON line per size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES_MIB = (1, 16, 64, 256)


def _held_object(data: bytes) -> dict[str, int]:
    import psutil

    return {"size": len(data), "rss": psutil.Process().memory_info().rss}


def _held_artifact(descriptor: dict[str, Any], cache: str) -> dict[str, int]:
    import psutil

    from pyro.cluster.copyin import fetch

    size = fetch(descriptor, Path(cache)).stat().st_size
    return {"size": size, "rss": psutil.Process().memory_info().rss}


def _inner() -> None:
    sys.path.insert(0, str(ROOT))
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pyro.cluster import copyin
    from tests.helpers.registry import running_registry

    with tempfile.TemporaryDirectory(prefix="pyro-bench-copyin-") as scratch:
        root = Path(scratch)
        with running_registry(root / "registry") as registry:
            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 1, "include_dashboard": False},
            )
            try:
                cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
                head = ray.get_runtime_context().get_node_id()
                other = next(n["NodeID"] for n in ray.nodes() if n["NodeID"] != head)
                there = NodeAffinitySchedulingStrategy(other, soft=False)
                obj = ray.remote(num_cpus=0)(_held_object).options(scheduling_strategy=there)
                art = ray.remote(num_cpus=0)(_held_artifact).options(scheduling_strategy=there)
                ray.get(obj.remote(b"warm"))
                repository = f"oci://{registry.address}/bench/copy-in"
                for mib in SIZES_MIB:
                    source = root / f"src{mib}"
                    source.mkdir()
                    (source / "data.bin").write_bytes(os.urandom(mib << 20))
                    started = time.perf_counter()
                    tar = root / f"object{mib}.tar"
                    copyin.pack_to(source, ["data.bin"], tar)
                    held = ray.get(obj.remote(ray.put(tar.read_bytes())))
                    object_s = time.perf_counter() - started
                    started = time.perf_counter()
                    tar = root / f"artifact{mib}.tar"
                    copyin.pack_to(source, ["data.bin"], tar)
                    descriptor = copyin.push(tar, repository)
                    pulled = ray.get(art.remote(descriptor, str(root / f"cache{mib}")))
                    artifact_s = time.perf_counter() - started
                    print(
                        json.dumps(
                            {
                                "mib": mib,
                                "object_s": round(object_s, 2),
                                "artifact_s": round(artifact_s, 2),
                                "object_node_rss_mib": held["rss"] >> 20,
                                "artifact_node_rss_mib": pulled["rss"] >> 20,
                            }
                        ),
                        flush=True,
                    )
            finally:
                ray.shutdown()
                cluster.shutdown()


def main() -> None:
    if "--inner" in sys.argv:
        _inner()
        return
    home = tempfile.mkdtemp(prefix="pyro-bench-home-")
    ray_tmp = tempfile.mkdtemp(prefix="pyro-ray-", dir="/tmp")
    env = {
        **os.environ,
        "HOME": home,
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_BACKEND_LOG_LEVEL": "error",
        "PYTHONPATH": str(ROOT),
    }
    script = [sys.executable, __file__, "--inner"]
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *script],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(done.stderr[-3000:])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
