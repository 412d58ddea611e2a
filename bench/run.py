"""pyro's benchmark: `make bench` → bench/results.json plus a table on stdout.

Every figure is measured in this run on this machine: median, min and max over N runs.
Ratios compare figures from the same run, so they hold across machines of different speed:

* ``floor_s``      the same kernel + rootfs + agent booted by a minimal direct QEMU
                   invocation, to the agent's hello plus one exec (no pyro on the path)
* ``cold_run_s``   ``pyro run --cold debian:12 -- true`` (environment cached, kernel boot
                   forced), whole CLI process
* ``warm_run_s``   ``pyro run debian:12 -- true`` restoring the saved ready guest (one run
                   before the timing saves it); every timed run must report a restore
* ``cold_vs_floor`` = cold_run_s / floor_s; ``warm_vs_cold`` = warm_run_s / cold_run_s
* ``plan_s``, ``validate_s``, ``help_s``: CLI wall times of ``pyro plan examples/hello.yaml``,
  ``pyro validate examples/hello.yaml`` and ``pyro --help``
* ``import_floor_s`` what any CLI built on pyro's chosen libraries pays before its own
  code: this Python starting, importing click and defining one pydantic model, with
  pydantic's plugin scan off and no interpreter teardown (as pyro's CLI does); timed
  interleaved with ``help_s``, ``validate_s`` and ``plan_s``
* ``cached_pull_s`` pulling an installed environment through the SDK (no blob request)
* ``task_exec_rtt_s`` ``exec_task(id, "true")`` through the SDK on a running task
* ``task_exec_concurrent4_s`` four ``exec_task(id, "sleep 1")`` at once (SDK threads) on one
  running task, until the last returned; ``task_exec_serial4_s`` the same four one after
  another; ``task_exec_concurrency_speedup`` = serial4 / concurrent4 (4 when they overlap
  fully, 1 when they queue)
* ``sdk_warm_run_s`` / ``pool_run_s`` ``Pyro().run_in_vm("debian:12", ["true"])`` in a
  long-lived process: restoring a guest per run / taking it from ``Pyro(warm_pool=1)``
  (the pool refilled between runs); ``pool_vs_sdk_warm`` = pool_run_s / sdk_warm_run_s
* ``serial8_s`` / ``concurrent8_s`` eight ``pyro run`` (default: warm) one after another / all
  at once, each timed N times, alternating;
  ``concurrent_throughput_ratio`` = (serial8/concurrent8) / min(8, cores)
* ``local8_s`` / ``cluster8_s`` / ``dispatch_overhead_s``: an 8-instance matrix here and on a
  two-node Ray cluster on this machine (``--only matrix``; bench/cluster.py)
* ``concurrent8_no_slots_s`` the same eight at once with start slots off
  (``PYRO_START_SLOTS=0``, pyro/host/startslots.py); ``start_slots_speedup`` =
  concurrent8_no_slots / concurrent8; ``concurrent8_run_mean_s`` /
  ``concurrent8_no_slots_run_mean_s``: how long each of the eight took, on average
* ``vmm_rss_mb``   QEMU's resident memory with a booted guest
* ``idle_vm_cpu_pct`` CPU a running task's QEMU uses while its guest waits for a command,
  in % of one core (what each idle workspace or pooled guest costs a long-lived host)
* ``net_host_to_guest_mbps`` / ``net_guest_to_host_mbps``: HTTP throughput under policy
  egress, MB/s (bench/network.py)
* ``seed64_s``, ``copyin64_s``, ``host_cp64_s``, ``git_commit_guest_s``,
  ``git_commit_host_s``: what users do with a 64 MB / 2,000-file tree (bench/workloads.py);
  ``seed64_vs_floor`` = seed64_s / floor_s, ``copyin64_vs_host`` = copyin64_s / host_cp64_s,
  ``git_commit_guest_vs_host`` = git_commit_guest_s / git_commit_host_s (the TCG factor)
* ``plan_vs_import_floor`` = plan_s / import_floor_s
* ``task_create_s``, ``task_pause_s``, ``task_resume_s``, ``task_fork_s``, ``fork8_s``: task
  state (bench/state.py); ``resume_vs_create``, ``fork_vs_create``, ``fork8_vs_create`` are
  each over task_create_s
* ``image_convert_cold_s`` / ``image_convert_cached_s``: a ~100 MB container image pulled
  from a local registry and made an environment, into an empty cache / again, installed
  (bench/images.py)

Besides results.json, a full run writes the chart beside it (results.svg, bench/chart.py) and
appends the results as one line to bench/history.jsonl. ``--only GROUP,...`` runs a subset
(for working on one figure) and writes nothing unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYRO = [sys.executable, "-m", "pyro.cli"]
ENV = "debian:12"


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
        "runs": len(samples),
    }


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        begun = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - begun)
    return samples


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([*PYRO, *args], capture_output=True, cwd=ROOT, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench: pyro {' '.join(args)} failed:\n{proc.stderr.decode()}")
    return proc


def run_true(mode: str | None, *flags: str) -> None:
    """``pyro run [flags] debian:12 -- true``; fails the bench if the boot was not ``mode``."""
    proc = cli("run", "--json", *flags, ENV, "--", "true")
    boot = next(s for s in json.loads(proc.stdout)["steps"] if s["id"] == "boot")
    if mode is not None and not boot["message"].endswith(f", {mode})"):
        raise SystemExit(f"bench: expected a {mode} boot, got {boot['message']!r}")


def floor_once(install: Any, initrd: Path) -> tuple[float, float]:
    """Direct QEMU: launch → agent hello → exec true → kill. Returns (seconds, rss_mb)."""
    import psutil

    from pyro.guest.client import AgentClient

    with tempfile.TemporaryDirectory(prefix="pyro-floor-") as tmp:
        sock_path = Path(tmp) / "a.sock"
        argv = [
            "qemu-system-x86_64",
            "-M",
            "microvm,acpi=off,x-option-roms=off,isa-serial=on",
            "-accel",
            "tcg,tb-size=32",
            "-cpu",
            "max",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-kernel",
            str(install.kernel),
            "-initrd",
            str(initrd),
            "-append",
            "console=ttyS0 reboot=t panic=-1 quiet",
            "-serial",
            f"file:{tmp}/serial.log",
            "-drive",
            f"id=root,if=none,file={install.rootfs},format=raw,snapshot=on",
            "-device",
            "virtio-blk-device,drive=root",
            "-device",
            "virtio-serial-device",
            "-chardev",
            f"socket,id=agent,path={sock_path},server=on,wait=off",
            "-device",
            "virtserialport,chardev=agent,name=org.pyro.agent",
        ]
        begun = time.perf_counter()
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.connect(str(sock_path))
                    break
                except OSError:
                    sock.close()
                    if time.monotonic() > deadline:
                        raise SystemExit("bench: QEMU never opened its agent socket") from None
                    time.sleep(0.002)
            with AgentClient.connect(sock, hello_timeout=30) as client:
                result = client.exec(["true"], timeout_s=30)
                elapsed = time.perf_counter() - begun
                assert result.exit_code == 0
                rss = psutil.Process(qemu.pid).memory_info().rss / (1 << 20)
        finally:
            qemu.kill()
            qemu.wait()
    return elapsed, rss


GROUPS = (
    "cli",
    "start",
    "task",
    "sdk",
    "network",
    "concurrency",
    "workloads",
    "state",
    "images",
    "matrix",
)
HISTORY = ROOT / "bench" / "history.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None, help="default: bench/results.json")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}"
    )
    args = parser.parse_args()
    runs = max(5, args.runs)
    only = set(filter(None, args.only.split(",")))
    if only - set(GROUPS):
        parser.error(f"--only: unknown group(s) {sorted(only - set(GROUPS))}; known: {GROUPS}")
    full = only == set(GROUPS)
    output = args.output or (str(ROOT / "bench" / "results.json") if full else None)

    sys.path.insert(0, str(ROOT))
    from pyro.environments import service
    from pyro.guest.build import build_agent_initrd
    from pyro.vmm.probe import probe_host

    install = service.pull(ENV)
    initrd = build_agent_initrd()
    host = probe_host()
    results: dict[str, Any] = {
        "backend": "qemu-tcg" if host.kvm != "hardware" else "qemu-kvm",
        "host": {
            "arch": host.arch,
            "cpus": host.cpus,
            "kvm": host.kvm,
            "python": platform.python_version(),
        },
        "environment": ENV,
    }
    figures: dict[str, dict[str, float]] = {}
    if "cli" in only:
        cli_figures(figures, max(15, runs))
        figures["cached_pull_s"] = stats(timed(lambda: service.pull(ENV), runs))
    if "start" in only:
        start_figures(figures, install, initrd, runs)
    if "task" in only:
        rtt_samples, idle_samples = task_rtt_and_idle_cpu(runs)
        figures["task_exec_rtt_s"] = stats(rtt_samples)
        figures["idle_vm_cpu_pct"] = stats(idle_samples)
        serial4, concurrent4 = task_concurrent_execs(runs)
        figures["task_exec_serial4_s"] = stats(serial4)
        figures["task_exec_concurrent4_s"] = stats(concurrent4)
        figures["task_exec_concurrency_speedup"] = stats(
            [s / c for s, c in zip(serial4, concurrent4, strict=True)]
        )
    if "sdk" in only:
        figures["sdk_warm_run_s"] = stats(in_process_runs(0, runs))
        figures["pool_run_s"] = stats(in_process_runs(1, runs))
    if "network" in only:
        from network import egress_throughput  # bench/network.py, next to this script

        for key, samples in egress_throughput(install, initrd, runs).items():
            figures[key] = stats(samples)
    if "concurrency" in only:
        results["concurrent8_failures"] = concurrency_figures(figures, runs)
    if "workloads" in only:
        workload_figures(figures, max(3, runs // 2 + 1))
    if "state" in only:
        from state import state_figures  # bench/state.py, next to this script

        for key, samples in state_figures(max(3, runs // 2 + 1)).items():
            figures[key] = stats(samples)
    if "images" in only:
        import images  # bench/images.py, next to this script

        cold, cached = images.convert_times(3)
        figures["image_convert_cold_s"], figures["image_convert_cached_s"] = (
            stats(cold),
            stats(cached),
        )
    if "matrix" in only:
        import cluster  # bench/cluster.py, next to this script

        matrix_runs = max(3, runs // 2 + 1)
        figures["local8_s"] = stats(cluster.local8(matrix_runs))
        figures["cluster8_s"] = stats(cluster.cluster8(matrix_runs))
        overhead = (figures["cluster8_s"]["median"] - figures["local8_s"]["median"]) / 8
        results["dispatch_overhead_s"] = round(overhead, 3)

    cores = os.cpu_count() or 1
    for name, (a, b) in RATIOS.items():
        if a in figures and b in figures:
            results[name] = round(figures[a]["median"] / figures[b]["median"], 3)
    if "serial8_s" in figures and "concurrent8_s" in figures:
        results["concurrent_throughput_ratio"] = round(
            figures["serial8_s"]["median"] / figures["concurrent8_s"]["median"] / min(8, cores), 3
        )
    results.update(figures)
    results["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["commit"] = git_commit()
    if output is not None:
        write_results(results, Path(output), history=HISTORY if full else None)

    width = max(len(k) for k in figures)
    print(f"{'figure':<{width}}  {'median':>9} {'min':>9} {'max':>9}  runs")
    for key in sorted(figures):
        f = figures[key]
        print(f"{key:<{width}}  {f['median']:>9.4f} {f['min']:>9.4f} {f['max']:>9.4f}  {f['runs']}")
    for key in [
        *RATIOS,
        "concurrent_throughput_ratio",
        "concurrent8_failures",
        "dispatch_overhead_s",
    ]:
        if key in results:
            print(f"{key}: {results[key]}")
    print(f"backend: {results['backend']}  host: {results['host']}  → {output or '(not written)'}")
    return 0


# ratio name -> (figure, baseline figure), medians from the same run
RATIOS = {
    "cold_vs_floor": ("cold_run_s", "floor_s"),
    "warm_vs_cold": ("warm_run_s", "cold_run_s"),
    "pool_vs_sdk_warm": ("pool_run_s", "sdk_warm_run_s"),
    "start_slots_speedup": ("concurrent8_no_slots_s", "concurrent8_s"),
    "plan_vs_import_floor": ("plan_s", "import_floor_s"),
    "seed64_vs_floor": ("seed64_s", "floor_s"),
    "copyin64_vs_host": ("copyin64_s", "host_cp64_s"),
    "git_commit_guest_vs_host": ("git_commit_guest_s", "git_commit_host_s"),
    "resume_vs_create": ("task_resume_s", "task_create_s"),
    "fork_vs_create": ("task_fork_s", "task_create_s"),
    "fork8_vs_create": ("fork8_s", "task_create_s"),
}


def write_results(results: dict[str, Any], output: Path, *, history: Path | None) -> None:
    """results.json, the chart beside it, and (``history``) one more line of history."""
    from chart import render_results  # bench/chart.py, next to this script

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    output.with_suffix(".svg").write_text(render_results(results))
    if history is not None:
        with history.open("a") as out:
            out.write(json.dumps(results, sort_keys=True) + "\n")


def git_commit() -> str | None:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return proc.stdout.strip() or None


def cli_figures(figures: dict[str, dict[str, float]], runs: int) -> None:
    # The floor gets what pyro's CLI does for itself: no plugin scan, no interpreter teardown.
    floor_code = (
        "import os\nimport click\nfrom pydantic import BaseModel\n"
        "class M(BaseModel):\n    x: int\nos._exit(0)\n"
    )
    floor_env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "1"}
    commands: dict[str, Callable[[], Any]] = {
        "import_floor_s": lambda: subprocess.run(
            [sys.executable, "-c", floor_code], env=floor_env, check=True
        ),
        "help_s": lambda: cli("--help"),
        "validate_s": lambda: cli("validate", "examples/hello.yaml"),
        "plan_s": lambda: cli("plan", "examples/hello.yaml"),
    }
    # Interleaved, so a change in the host's speed hits the floor and the commands alike.
    cli_samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            cli_samples[name].extend(timed(command, 1))
    for name, values in cli_samples.items():
        figures[name] = stats(values)


def start_figures(
    figures: dict[str, dict[str, float]], install: Any, initrd: Path, runs: int
) -> None:
    run_true(None)  # saves the ready guest if there is none yet
    # Interleaved, so a change in the host's load hits all three figures alike.
    floor_samples, rss, cold_samples, warm_samples = [], [], [], []
    for _ in range(runs):
        seconds, mb = floor_once(install, initrd)
        floor_samples.append(seconds)
        rss.append(mb)
        cold_samples += timed(lambda: run_true("cold", "--cold"), 1)
        warm_samples += timed(lambda: run_true("restore"), 1)
    figures["floor_s"] = stats(floor_samples)
    figures["vmm_rss_mb"] = stats(rss)
    figures["cold_run_s"] = stats(cold_samples)
    figures["warm_run_s"] = stats(warm_samples)


def cpu_ns(pid: int) -> int:
    """CPU time of all of a process's threads, in ns (schedstat: finer than ticks)."""
    total = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((thread / "schedstat").read_text().split()[0])
    return total


def task_rtt_and_idle_cpu(runs: int) -> tuple[list[float], list[float]]:
    from pyro import Pyro

    pyro = Pyro()
    task = pyro.create_task(ENV)
    try:
        pyro.exec_task(task.id, "true")
        rtt = timed(lambda: pyro.exec_task(task.id, ["true"]), max(20, runs))
        pid = pyro.status_task(task.id).pid
        assert pid is not None
        idle = []
        for _ in range(runs):  # the guest waits for its next command
            before, begun = cpu_ns(pid), time.monotonic_ns()
            time.sleep(1.0)
            idle.append(100 * (cpu_ns(pid) - before) / (time.monotonic_ns() - begun))
        return rtt, idle
    finally:
        pyro.delete_task(task.id)


def task_concurrent_execs(runs: int) -> tuple[list[float], list[float]]:
    """Four ``sleep 1`` execs on one task one after another / at once, alternating."""
    import threading

    from pyro import Pyro

    pyro = Pyro()
    task = pyro.create_task(ENV)

    def four_at_once() -> None:
        threads = [
            threading.Thread(target=pyro.exec_task, args=(task.id, ["sleep", "1"]))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    try:
        pyro.exec_task(task.id, "true")
        serial: list[float] = []
        concurrent: list[float] = []
        for _ in range(runs):
            serial += timed(lambda: [pyro.exec_task(task.id, ["sleep", "1"]) for _ in range(4)], 1)
            concurrent += timed(four_at_once, 1)
        return serial, concurrent
    finally:
        pyro.delete_task(task.id)


def in_process_runs(pool_size: int, runs: int) -> list[float]:
    from pyro import Pyro

    samples = []
    with Pyro(warm_pool=pool_size) as pyro:
        pyro.run_in_vm(ENV, ["true"])  # points the pool at this shape
        for _ in range(max(10, runs)):
            if pyro._warm_pool is not None:
                pyro._warm_pool.wait_filled(60)
            begun = time.perf_counter()
            result = pyro.run_in_vm(ENV, ["true"])
            samples.append(time.perf_counter() - begun)
            mode = next(s.message for s in result.steps if s.action == "boot") or ""
            expected = "pooled" if pool_size else "restore"
            if not mode.endswith(f", {expected})"):
                raise SystemExit(f"bench: expected a {expected} boot, got {mode!r}")
    return samples


# Started directly with their output discarded, like a shell's 'pyro run ... &': the
# bench process does no work (no pipe-reading threads) while they run, so the CPU the
# runs compete for is theirs.
def start_run(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*PYRO, "run", ENV, "--", "true"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def serial8() -> None:
    for _ in range(8):
        if start_run().wait() != 0:
            raise SystemExit("bench: a serial 'pyro run' failed (run it by hand to see why)")


def concurrent8(env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Eight runs at once: (seconds until the last ends, mean seconds a run took, failures)."""
    begun = time.perf_counter()
    started = [start_run(env) for _ in range(8)]
    took: list[float] = []

    def wait(proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        took.append(time.perf_counter() - begun)

    waiters = [threading.Thread(target=wait, args=(proc,)) for proc in started]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    failures = sum(proc.returncode != 0 for proc in started)
    return max(took), statistics.mean(took), failures


def concurrency_figures(figures: dict[str, dict[str, float]], runs: int) -> int:
    """The serial/concurrent figures; returns how many of the concurrent runs failed."""
    no_slots = {**os.environ, "PYRO_START_SLOTS": "0"}
    # Alternated, like floor/cold/warm: the host's speed drifts within minutes, and a
    # ratio of two blocks measured one after the other would carry that drift.
    series: dict[str, list[float]] = {
        key: []
        for key in (
            "serial8_s",
            "concurrent8_s",
            "concurrent8_run_mean_s",
            "concurrent8_no_slots_s",
            "concurrent8_no_slots_run_mean_s",
        )
    }
    failed = 0
    for _ in range(runs):
        series["serial8_s"] += timed(serial8, 1)
        for suffix, env in (("", None), ("_no_slots", no_slots)):
            last, mean, failures = concurrent8(env)
            series[f"concurrent8{suffix}_s"].append(last)
            series[f"concurrent8{suffix}_run_mean_s"].append(mean)
            failed += failures
    for key, values in series.items():
        figures[key] = stats(values)
    return failed


def workload_figures(figures: dict[str, dict[str, float]], runs: int) -> None:
    """bench/workloads.py: the 64 MB tree seeded, copied in and committed, with their host
    baselines."""
    import workloads  # bench/workloads.py, next to this script

    from pyro import Pyro

    pyro = Pyro()
    with workloads.workload_tree() as tree:
        figures["seed64_s"] = stats(
            [workloads.seed_and_first_exec(pyro, tree) for _ in range(runs)]
        )
        guest, host = workloads.copy_in(pyro, tree, runs)
        figures["copyin64_s"], figures["host_cp64_s"] = stats(guest), stats(host)
        guest, host = workloads.git_commit(pyro, tree, runs)
        figures["git_commit_guest_s"], figures["git_commit_host_s"] = stats(guest), stats(host)


if __name__ == "__main__":
    shutil.which("qemu-system-x86_64") or sys.exit("bench: qemu-system-x86_64 is not installed")
    raise SystemExit(main())
