"""bench/simulate.py: calibrated on the measured figures, never below its lower bound."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

import simulate


def test_the_calibration_reproduces_the_measured_two_node_run() -> None:
    service = simulate.calibrate(5.08, 0.03)
    inputs = simulate.Inputs(
        runs=8,
        hosts=2,
        slots=1,
        service_s=service,
        overhead_s=0.03,
        sigma=0.0,
        env_mb=0.0,
        dead_hosts=0,
    )
    makespan, bound = simulate.simulate(inputs)
    assert makespan == pytest.approx(5.08)
    assert bound == pytest.approx(4 * service)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"dead_hosts": 0},
        {"detect_s": 64.0},
        {"sigma": 1.5},
        {"longest_first": True},
        {"registry_mb_s": 100.0},
    ],
)
def test_every_run_finishes_and_no_makespan_beats_its_bound(change: dict[str, object]) -> None:
    inputs = replace(simulate.Inputs(service_s=1.2), **change)  # type: ignore[arg-type]
    makespan, bound = simulate.simulate(inputs)
    assert bound <= makespan < 20 * bound


def test_a_slower_failure_detection_never_finishes_sooner() -> None:
    base = simulate.Inputs(service_s=1.2)
    times = [simulate.simulate(replace(base, detect_s=d))[0] for d in (5.0, 14.0, 64.0)]
    assert times == sorted(times)
