"""``make soak``: fault injection and fuzzing against real guests, bounded to ~10 minutes.

Writes ``soak/results.json`` and prints a table. Everything runs on loopback with private
``PYRO_STATE_DIR``/``PYRO_CACHE_DIR`` folders (the default cache is only read: it provides
debian:12, pushed once to a loopback registry that the pull scenarios use). The cluster
cases (soak/cluster.py) run in a network namespace of their own. ``--only a,b`` runs only
the cases named (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

import cluster  # noqa: E402
import faults  # noqa: E402
import hostile  # noqa: E402
from harness import Soak  # noqa: E402
from helpers.registry import running_registry  # noqa: E402


def fuzz(soak: Soak, spec_n: int, frame_n: int, cli_n: int) -> dict[str, int]:
    """Run the unit fuzz checks (tests/unit/fuzz) at soak scale; failures count as tracebacks."""
    from hypothesis import HealthCheck, given, settings
    from unit.fuzz import fuzzlib

    counts = {"spec": 0, "frame": 0, "cli": 0}
    base = Path("/nonexistent-base")

    def run(name: str, n: int, strategy: Any, check: Any) -> None:
        @settings(
            max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(strategy)
        def prop(example: Any) -> None:
            counts[name] += 1
            check(example)

        try:
            prop()
        except Exception as exc:  # a falsifying example: exactly what the soak looks for
            soak.tracebacks.append(f"fuzz {name}: {type(exc).__name__}: {str(exc)[:1500]}")

    run("spec", spec_n * 4 // 5, fuzzlib.spec_texts, lambda t: fuzzlib.check_spec_text(t, base))
    run("spec", spec_n // 5, fuzzlib.spec_documents(), lambda d: fuzzlib.check_spec_data(d, base))
    run("frame", frame_n, fuzzlib.hostile_sessions, fuzzlib.check_hostile_guest)
    cli_dir = Path(tempfile.mkdtemp(prefix="cli-", dir=soak.work))
    saved = {
        k: os.environ.get(k) for k in ("PYRO_STATE_DIR", "PYRO_CACHE_DIR", "PYRO_ENV_REGISTRY")
    }
    os.environ.update(
        PYRO_STATE_DIR=str(cli_dir / "state"),
        PYRO_CACHE_DIR=str(cli_dir / "cache"),
        PYRO_ENV_REGISTRY="127.0.0.1:9/none",
    )
    cwd = os.getcwd()
    os.chdir(cli_dir)
    try:
        run("cli", cli_n, fuzzlib.cli_argvs, fuzzlib.check_cli_argv)
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--spec-examples", type=int, default=10_000)
    parser.add_argument("--frame-examples", type=int, default=1_500)
    parser.add_argument("--cli-examples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--only",
        type=_cases,
        default=CASES,
        metavar="CASE,…",
        help="run only these cases: " + ", ".join(CASES),
    )
    args = parser.parse_args()
    only: tuple[str, ...] = args.only
    rng = random.Random(args.seed)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pyro-soak-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PYRO_")}
    soak = Soak(work=work, base_env=base_env)
    details: dict[str, Any] = {"seed": args.seed}
    timings: dict[str, float] = {}
    # A SIGTERM (timeout, Ctrl-C from make) still runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = {"spec": 0, "frame": 0, "cli": 0}
    try:
        guest_cases = [name for name in GUEST_CASES if name in only]
        if guest_cases:
            with running_registry(work / "registry") as registry:
                soak.base_env["PYRO_ENV_REGISTRY"] = f"{registry.address}/soak"
                t = time.monotonic()
                push = soak.pyro("env", "push", "debian:12", registry.ref("soak/debian", "12"))
                if push.returncode != 0:
                    print(f"cannot push debian:12 to the loopback registry:\n{push.stderr}")
                    return 1
                timings["push"] = time.monotonic() - t
                calls = {
                    "kills": lambda: faults.kill_injections(soak, registry, args.kills, rng),
                    "registry_killed": lambda: faults.registry_dies_mid_pull(soak, registry, rng),
                    "disk_full": lambda: faults.disk_full_install(soak),
                    "cache_corruptions": lambda: faults.cache_corruptions(soak),
                    "hostile_guests": lambda: faults.hostile_guests(soak),
                }
                for name in guest_cases:
                    t = time.monotonic()
                    details[name] = calls[name]()
                    timings[name] = time.monotonic() - t
                    print(f"[soak] {name} done in {timings[name]:.0f} s", file=sys.stderr)
        if "hostile_inputs" in only:
            t = time.monotonic()
            details["hostile_inputs"] = hostile.hostile_inputs(soak)
            timings["hostile_inputs"] = time.monotonic() - t
            print(
                f"[soak] hostile_inputs done in {timings['hostile_inputs']:.0f} s", file=sys.stderr
            )
        cluster_cases = [name for name in cluster.CASES if name in only]
        if cluster_cases:
            t = time.monotonic()
            details.update(cluster.run_cases(cluster_cases, work))
            timings["cluster"] = time.monotonic() - t
        if "fuzz" in only:
            t = time.monotonic()
            counts = fuzz(soak, args.spec_examples, args.frame_examples, args.cli_examples)
            timings["fuzz"] = time.monotonic() - t
        soak.tracebacks += [f"crash log {p}" for p in soak.crash_logs()]
    finally:
        _delete_vms(soak.state)
        shutil.rmtree(work, ignore_errors=True)
    corruptions = details.get("cache_corruptions", {})
    unclear = sorted(k for k, v in details.get("hostile_guests", {}).items() if not v["clear_end"])
    hostile_run = details.get("hostile_inputs", {"passed": 0, "failed": 0, "skipped": 0})
    clusters = {name: details[name] for name in cluster.CASES if name in details}
    results = {
        "cases": list(only),
        "kill_injections": details.get("kills", {}).get("killed", 0),
        "leaks_found": len(soak.leaks),
        "fuzz_spec_examples": counts["spec"],
        "fuzz_frame_examples": counts["frame"],
        "fuzz_cli_examples": counts["cli"],
        "tracebacks": len(soak.tracebacks),
        "cache_corruptions_repaired": sum(corruptions.values()),
        "cache_corruptions_tried": len(corruptions),
        "hostile_guests_unclear": unclear,
        "hostile_tests_passed": hostile_run["passed"],
        "hostile_tests_failed": hostile_run["failed"],
        "hostile_tests_skipped": hostile_run["skipped"],
        **{f"{name}_ok": bool(report.get("ok")) for name, report in clusters.items()},
        "duration_s": round(time.monotonic() - started, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "leaks": soak.leaks,
        "traceback_details": soak.tracebacks,
        "notes": soak.notes,
        "details": details,
    }
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    _table(results)
    repaired = sum(corruptions.values()) == len(corruptions)
    hostile_ok = not hostile_run["failed"] and (
        "hostile_inputs" not in only or hostile_run["passed"]
    )
    clusters_ok = all(report.get("ok") for report in clusters.values())
    ok = (
        not soak.leaks
        and not soak.tracebacks
        and repaired
        and not unclear
        and hostile_ok
        and clusters_ok
    )
    return 0 if ok else 1


#: The cases that boot guests against the soak's loopback registry, in their order.
GUEST_CASES = ("kills", "registry_killed", "disk_full", "cache_corruptions", "hostile_guests")
CASES = (*GUEST_CASES, "hostile_inputs", *cluster.CASES, "fuzz")


def _cases(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(CASES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case {', '.join(unknown) or '(none)'}: choose from {', '.join(CASES)}"
        )
    return names


def _delete_vms(state: Path) -> None:
    """Whatever a scenario left (e.g. its task when interrupted) dies with the soak."""
    from pyro.machines.registry import VMRegistry

    registry = VMRegistry(state)
    for record in registry.list():
        registry.delete(record.id)


def _table(results: dict[str, Any]) -> None:
    keys = [
        "kill_injections", "leaks_found", "fuzz_spec_examples", "fuzz_frame_examples",
        "fuzz_cli_examples", "tracebacks", "cache_corruptions_repaired",
        "cache_corruptions_tried", "hostile_guests_unclear", "hostile_tests_passed",
        "hostile_tests_failed", "hostile_tests_skipped",
    ] + [f"{name}_ok" for name in cluster.CASES if f"{name}_ok" in results] + [
        "duration_s",
    ]  # fmt: skip
    width = max(map(len, keys))
    print(f"{'metric':<{width}}  value")
    for key in keys:
        print(f"{key:<{width}}  {results[key]}")
    for leak in results["leaks"]:
        print(f"leak: {leak}")
    for tb in results["traceback_details"]:
        print(f"traceback: {tb[:400]}")
    for name in cluster.CASES:
        report = results["details"].get(name)
        if report:
            counts = report.get("accounting", {})
            print(
                f"{name}: detected_s={report.get('detected_s')} "
                f"vmm_gone_s={report.get('vmm_gone_s')} total_s={report.get('total_s')} "
                f"retried={counts.get('retried')} lost={counts.get('lost')} "
                f"leaks={report.get('leaks')} error={report.get('error')}"
            )
    for note in results["notes"]:
        print(f"note: {note[:400]}")


if __name__ == "__main__":
    sys.exit(main())
