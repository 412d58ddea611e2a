"""A discrete-event simulation of a matrix on a cluster: 1000 runs over 50 hosts.

Calibrated first on the measured two-node runs (docs/performance.md, "Matrices and
clusters"): the per-run service time is chosen so that 8 runs over 2 one-slot nodes take
the measured ``cluster8_s``, with the measured ``dispatch_overhead_s`` added per run.
Then it reports the makespan of 1000 runs over 50 hosts next to its lower bound
(``max(longest run, total work / slots)`` plus one environment pull), and a sensitivity
sweep: registry bandwidth (each host's first run waits for its pull, pulls share the
registry), failure-detection time (a few hosts die mid-way; their runs are retried after
detection), the tail of run durations (lognormal sigma) and submission order (FIFO vs
longest-first). Deterministic (seeded); prints a Markdown table.

    python bench/simulate.py [--cluster8 5.08] [--overhead 0.03]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Inputs:
    runs: int = 1000
    hosts: int = 50
    slots: int = 2
    service_s: float = 1.0  # median run time, set by calibrate()
    overhead_s: float = 0.03
    sigma: float = 0.5  # lognormal tail of run durations
    env_mb: float = 300.0  # compressed environment a host pulls once
    registry_mb_s: float = 1000.0  # what the registry serves, shared by concurrent pulls
    detect_s: float = 14.0  # until a dead host's runs are known lost (a killed node)
    dead_hosts: int = 2  # hosts that die at a random time within the first half
    longest_first: bool = False
    seed: int = 7


def durations(inputs: Inputs) -> list[float]:
    rng = random.Random(inputs.seed)
    return [inputs.service_s * math.exp(rng.gauss(0, inputs.sigma)) for _ in range(inputs.runs)]


def simulate(inputs: Inputs) -> tuple[float, float]:
    """(makespan, lower bound) in seconds."""
    work = durations(inputs)
    order = (
        sorted(range(len(work)), key=lambda i: -work[i])
        if inputs.longest_first
        else list(range(len(work)))
    )
    rng = random.Random(inputs.seed + 1)
    horizon = sum(work) / (inputs.hosts * inputs.slots)
    # Pulls share the registry: all hosts pull at once at the start, each gets 1/hosts of it.
    pull_s = inputs.env_mb / (inputs.registry_mb_s / inputs.hosts)
    # Hosts die while runs are under way: after their pull, within the first half of the work.
    victims = rng.sample(range(inputs.hosts), inputs.dead_hosts)
    deaths = {h: pull_s + rng.uniform(0, horizon / 2) for h in victims}
    free: list[tuple[float, int]] = [
        (pull_s, h) for h in range(inputs.hosts) for _ in range(inputs.slots)
    ]
    heapq.heapify(free)
    pending = list(order)
    retry: list[tuple[float, int]] = []  # (known-lost time, run)
    makespan = 0.0
    while pending or retry:
        at, host = heapq.heappop(free)
        if host in deaths and at >= deaths[host]:
            continue  # the slot died with its host
        ready = [r for r in retry if r[0] <= at]
        if ready:
            retry.remove(ready[0])
            run = ready[0][1]
        elif pending:
            run = pending.pop(0)
        else:
            heapq.heappush(free, (min(t for t, _ in retry), host))
            continue
        end = at + inputs.overhead_s + work[run]
        if host in deaths and end > deaths[host]:
            retry.append((deaths[host] + inputs.detect_s, run))
            continue
        makespan = max(makespan, end)
        heapq.heappush(free, (end, host))
    bound = max(max(work), sum(work) / (inputs.hosts * inputs.slots)) + pull_s
    return makespan, bound


def calibrate(cluster8_s: float, overhead_s: float) -> float:
    """The service time that makes 8 runs over 2 one-slot nodes take ``cluster8_s``."""
    return max(0.01, cluster8_s / 4 - overhead_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster8", type=float, default=5.08, help="measured cluster8_s")
    parser.add_argument("--overhead", type=float, default=0.03, help="measured dispatch_overhead_s")
    args = parser.parse_args()
    service = calibrate(args.cluster8, args.overhead)
    check = simulate(
        Inputs(
            runs=8,
            hosts=2,
            slots=1,
            service_s=service,
            overhead_s=args.overhead,
            sigma=0.0,
            env_mb=0.0,
            dead_hosts=0,
        )
    )[0]
    print(
        f"calibration: service {service:.3f} s per run; 8 runs on 2 nodes: {check:.2f} s "
        f"(measured {args.cluster8:.2f} s)\n"
    )
    base = Inputs(service_s=service, overhead_s=args.overhead)
    rows = [("baseline", base)]
    for mb_s in (100.0, 10000.0):
        rows.append((f"registry {mb_s:g} MB/s", Inputs(**{**base.__dict__, "registry_mb_s": mb_s})))
    rows.append(("no host dies", Inputs(**{**base.__dict__, "dead_hosts": 0})))
    for detect in (5.0, 64.0):
        rows.append(
            (f"failure detection {detect:g} s", Inputs(**{**base.__dict__, "detect_s": detect}))
        )
    for sigma in (0.0, 1.5):
        rows.append((f"duration sigma {sigma:g}", Inputs(**{**base.__dict__, "sigma": sigma})))
        rows.append(
            (
                f"duration sigma {sigma:g}, longest first",
                Inputs(**{**base.__dict__, "sigma": sigma, "longest_first": True}),
            )
        )
    rows.append(("longest first", Inputs(**{**base.__dict__, "longest_first": True})))
    print("| case | makespan s | lower bound s | ratio |")
    print("|---|---|---|---|")
    for name, inputs in rows:
        makespan, bound = simulate(inputs)
        print(f"| {name} | {makespan:.1f} | {bound:.1f} | {makespan / bound:.2f} |")


if __name__ == "__main__":
    main()
