"""``--only matrix``: the same 8-instance matrix on this host and on a two-node Ray cluster.

* ``local8_s``   ``pyro apply`` of an 8-instance matrix here (instances over the start
                 slots; warm starts as any run gets them)
* ``cluster8_s`` the same matrix with ``--on ray://…`` over a two-node
                 ``ray.cluster_utils.Cluster`` on this same machine (each node with its own
                 cache and one start slot), after one untimed apply has pulled the
                 environment into both nodes' caches
* ``dispatch_overhead_s`` = (cluster8_s - local8_s) / 8: what the cluster adds per run
                 on the same CPUs (Ray task, object store, each node re-planning)

The cluster, its registry and every guest live in a network namespace of their own
(``unshare -n``: Ray binds the machine's routable address otherwise); this script re-runs
itself there with ``--inner`` and reads its samples from stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYRO = [sys.executable, "-m", "pyro.cli"]
SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {{name: bench}}
spec:
  environment: "{ref}"
  backend: qemu-tcg
  matrix: {{n: {{range: 8}}}}
  steps: [{{name: t, run: "echo {{{{ vars.n }}}}"}}]
"""


def _apply(folder: Path, *flags: str, env: dict[str, str] | None = None) -> float:
    begun = time.perf_counter()
    done = subprocess.run(
        [*PYRO, "apply", "spec.yaml", "-q", *flags],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    took = time.perf_counter() - begun
    if done.returncode != 0:
        raise SystemExit(f"bench: the matrix apply failed:\n{done.stderr[-2000:]}")
    return took


def local8(runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "spec.yaml").write_text(SPEC.format(ref="debian:12"))
        _apply(folder)  # saves the ready guest the timed runs restore
        return [_apply(folder) for _ in range(runs)]


def cluster8(runs: int) -> list[float]:
    """Re-run this script in a network namespace of its own; its last line is the samples."""
    from pyro.paths import cache_dir

    ray_tmp = tempfile.mkdtemp(prefix="pyro-ray-", dir="/tmp")  # Ray's socket paths are short
    home = tempfile.mkdtemp(prefix="pyro-bench-home-")
    env = {
        **os.environ,
        "PYRO_CACHE_DIR": str(cache_dir()),
        "HOME": home,
        "RAY_TMPDIR": ray_tmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_BACKEND_LOG_LEVEL": "error",
        "PYTHONPATH": str(ROOT),
    }
    script = [sys.executable, __file__, "--inner", str(runs)]
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *script],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=3600,
        )
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: the cluster run failed:\n{done.stderr[-3000:]}")
    samples: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return samples


def _inner(runs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from ray.cluster_utils import Cluster

    from pyro.sdk import Pyro
    from tests.helpers.registry import running_registry

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with running_registry(root / "registry") as registry:
            ref = f"oci://{registry.address}/pyro/debian:12"
            Pyro().push_environment("debian:12", ref)
            nodes = []
            for name, extra in (("a", {"pyro-kvm": 1, "pyro-tcg": 1}), ("b", {"pyro-tcg": 1})):
                nodes.append(
                    {
                        "num_cpus": 1,
                        "resources": extra,
                        "include_dashboard": False,
                        "env_vars": {
                            "PYRO_CACHE_DIR": str(root / name / "cache"),
                            "PYRO_STATE_DIR": str(root / name / "state"),
                            "PYRO_START_SLOTS": "1",
                        },
                    }
                )
            temp = str(Path(os.environ["RAY_TMPDIR"]) / "ray")
            cluster = Cluster(initialize_head=True, head_node_args={**nodes[0], "temp_dir": temp})
            try:
                cluster.add_node(**nodes[1])
                cluster.wait_for_nodes()
                folder = root / "spec"
                folder.mkdir()
                (folder / "spec.yaml").write_text(SPEC.format(ref=ref))
                env = {**os.environ, "PYRO_STATE_DIR": str(root / "controller")}
                on = ("--on", f"ray://{cluster.address}")
                _apply(folder, *on, env=env)  # pulls into both nodes' caches
                samples = [_apply(folder, *on, env=env) for _ in range(runs)]
            finally:
                cluster.shutdown()
    print(json.dumps(samples))


if __name__ == "__main__" and sys.argv[1:2] == ["--inner"]:
    _inner(int(sys.argv[2]))
