"""The dispatcher with a fake in-process executor: results as they finish, retries,
merging (JUnit, exit codes) and cancellation; no guest, no Ray."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest

from pyro.cli.junit import render_junit_many
from pyro.cluster.dispatch import NODE_LOST, Dispatch, dispatch, worst_exit_code
from pyro.cluster.instances import Job, check_applyable, expand
from pyro.errors import PlanError
from pyro.execute.prepare import Prepared
from pyro.execute.result import InstanceInfo, RunResult, StepResult
from pyro.plan.planner import plan as plan_run
from pyro.spec.load import load_spec
from tests.unit.plan.fixtures import inventory, run_spec

Script = Callable[[Job, int], "tuple[float, RunResult]"]


def make_jobs(count: int, **spec: Any) -> list[Job]:
    loaded = load_spec(run_spec(matrix={"n": {"range": count}}, **spec))
    values = {i.name: i.values for i in loaded.instances}
    jobs = []
    for prepared in expand(Prepared(loaded)):
        plan = plan_run(prepared.loaded, inventory("installed"), name=prepared.instance)
        jobs.append(Job(prepared, plan, dict(values[prepared.instance or ""])))
    return jobs


def result(
    job: Job, *, exit_code: int | None = 0, error: str | None = None, **more: Any
) -> RunResult:
    ok = exit_code == 0 and error is None
    steps = (
        []
        if error
        else [
            StepResult(
                id="exec.hi",
                action="exec",
                name="hi",
                status="ok" if ok else "failed",
                exit_code=exit_code,
                stderr="" if ok else "boom\n",
            )
        ]
    )
    return RunResult(
        ok=ok,
        name=job.name,
        plan_digest=job.plan.digest,
        environment="debian:12",
        environment_digest=None,
        backend="qemu-tcg",
        vm_id=None,
        exit_code=exit_code,
        error={"type": error, "message": "it broke", "hint": "h"} if error else None,
        failed_step=more.pop("failed_step", None if ok else "exec.hi"),
        duration_ms=5,
        steps=steps,
        **more,
    )


class FakeExecutor:
    """Runs a script per attempt in threads; records submits; cancel releases waiters."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.submitted: list[tuple[str, int, frozenset[str]]] = []
        self.cancelled = threading.Event()
        self.closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16)

    def submit(
        self, job: Job, attempt: int, avoid: frozenset[str]
    ) -> concurrent.futures.Future[RunResult]:
        self.submitted.append((job.name, attempt, avoid))

        def run() -> RunResult:
            delay, outcome = self.script(job, attempt)
            if self.cancelled.wait(delay):
                raise KeyboardInterrupt
            return outcome

        return self._pool.submit(run)

    def cancel(self) -> None:
        self.cancelled.set()
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=True)


def test_results_come_as_they_finish_each_with_its_values() -> None:
    jobs = make_jobs(4)
    delays = {0: 0.4, 1: 0.0, 2: 0.2, 3: 0.1}
    executor = FakeExecutor(lambda job, _: (delays[int(job.values["n"])], result(job)))
    names = [r.name for r in dispatch(jobs, executor)]
    assert names == ["t[n=1]", "t[n=3]", "t[n=2]", "t[n=0]"]
    assert len(executor.submitted) == 4  # all submitted before any finished


def test_a_failing_step_is_a_result_and_is_never_retried() -> None:
    jobs = make_jobs(2, retries=5)
    executor = FakeExecutor(lambda job, _: (0.0, result(job, exit_code=3)))
    results = list(dispatch(jobs, executor))
    assert [r.exit_code for r in results] == [3, 3]
    assert [attempt for _, attempt, _ in executor.submitted] == [1, 1]


def test_a_boot_failure_is_retried_elsewhere_up_to_spec_retries() -> None:
    (job,) = make_jobs(1, retries=2)

    def script(job: Job, attempt: int) -> tuple[float, RunResult]:
        info = InstanceInfo(node=f"node-{attempt}")
        return 0.0, result(job, exit_code=None, error="VMError", failed_step="boot", instance=info)

    executor = FakeExecutor(script)
    (final,) = list(dispatch([job], executor))
    assert [(a, sorted(avoid)) for _, a, avoid in executor.submitted] == [
        (1, []),
        (2, ["node-1"]),
        (3, ["node-1", "node-2"]),
    ]
    assert final.instance is not None and final.instance.attempt == 3
    assert final.instance.node == "node-3" and final.instance.values == {"n": 0}
    assert worst_exit_code([final]) == 125


def test_a_boot_failure_then_success_reports_the_success() -> None:
    (job,) = make_jobs(1)

    def script(job: Job, attempt: int) -> tuple[float, RunResult]:
        if attempt == 1:
            return 0.0, result(job, exit_code=None, error="VMError", failed_step="boot")
        return 0.0, result(job)

    (final,) = list(dispatch([job], FakeExecutor(script)))
    assert final.ok and final.instance is not None and final.instance.attempt == 2


@pytest.mark.parametrize(("policy", "tries"), [("off", 2), ("egress", 1)])
def test_a_lost_node_is_retried_only_for_a_run_without_network(policy: str, tries: int) -> None:
    (job,) = make_jobs(1, network={"policy": policy})
    executor = FakeExecutor(lambda job, _: (0.0, result(job, exit_code=None, error=NODE_LOST)))
    list(dispatch([job], executor))
    assert len(executor.submitted) == tries


def test_retries_zero_never_retries() -> None:
    (job,) = make_jobs(1, retries=0)
    script = FakeExecutor(
        lambda job, _: (0.0, result(job, exit_code=None, error="VMError", failed_step="boot"))
    )
    list(dispatch([job], script))
    assert len(script.submitted) == 1


def test_closing_early_cancels_what_still_runs() -> None:
    jobs = make_jobs(3)
    executor = FakeExecutor(lambda job, _: (0.0 if job.values["n"] == 0 else 30.0, result(job)))
    results = Dispatch(jobs, executor)
    assert results.total == 3
    first = next(results)
    started = time.monotonic()
    results.close()
    assert first.name == "t[n=0]"
    assert executor.cancelled.is_set() and executor.closed
    assert time.monotonic() - started < 5  # the 30 s attempts were stopped


def test_worst_exit_code_ranks_cannot_run_then_timeout_then_highest() -> None:
    (job,) = make_jobs(1)
    ok, failed1, failed7 = result(job), result(job, exit_code=1), result(job, exit_code=7)
    timeout = result(job, exit_code=124)
    broken = result(job, exit_code=None, error="VMError")
    assert worst_exit_code([ok, ok]) == 0
    assert worst_exit_code([ok, failed1, failed7]) == 7
    assert worst_exit_code([failed7, timeout]) == 124
    assert worst_exit_code([timeout, broken, ok]) == 125
    assert worst_exit_code([]) == 0


def test_junit_has_a_suite_per_instance_with_its_properties() -> None:
    jobs = make_jobs(2)
    executor = FakeExecutor(
        lambda job, n: (
            0.0,
            result(job, exit_code=int(job.values["n"]), instance=InstanceInfo(node="n1")),
        )
    )
    results = sorted(dispatch(jobs, executor), key=lambda r: r.name)
    root = ET.fromstring(render_junit_many(results))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["t[n=0]", "t[n=1]"]
    assert [s.get("failures") for s in suites] == ["0", "1"]
    props = {p.get("name"): p.get("value") for p in suites[1].iter("property")}
    assert props == {
        "matrix.n": "1",
        "plan_digest": jobs[1].plan.digest,
        "backend": "qemu-tcg",
        "attempt": "1",
        "node": "n1",
    }


def test_an_unapplyable_instance_stops_the_dispatch_before_anything_runs() -> None:
    jobs = make_jobs(2, resources={"memoryMiB": 65536})
    with pytest.raises(PlanError, match=r"instance t\[n=0\] cannot run"):
        check_applyable(jobs)
