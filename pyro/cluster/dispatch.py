"""Running many jobs on an executor: results as they finish, retries, the worst exit code.

An :class:`Executor` runs one attempt of a job and returns a future of its RunResult
(this host's threads over its start slots, or Ray tasks). The dispatcher submits every
job, yields each result as soon as it is final, and tries a job again (up to its spec's
``retries``) only when its guest never started or its node was lost with network off: a
failing step is a result and is never retried. Anything ending the dispatch early
(Ctrl-C, the caller closing the generator, an unexpected error) cancels every job still
running before it goes on, so no VM outlives the dispatch.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Generator, Iterable, Iterator
from typing import Protocol

from pyro.cluster.instances import Job
from pyro.errors import PyroError
from pyro.execute.result import InstanceInfo, RunResult

#: The exit code of an instance pyro could not run (as the faces' EXIT_CANNOT_RUN).
CANNOT_RUN = 125
#: A run whose node was lost reports this error type (its guest may have had effects).
NODE_LOST = "NodeLostError"


class Executor(Protocol):
    """Where the attempts of jobs run."""

    def submit(
        self, job: Job, attempt: int, avoid: frozenset[str]
    ) -> concurrent.futures.Future[RunResult]:
        """Start one attempt; ``avoid`` names nodes it should not run on (earlier tries')."""
        ...

    def cancel(self) -> None:
        """Stop every attempt still running and delete its VM (blocking)."""
        ...

    def close(self) -> None:
        """Release what the executor holds once every attempt is done."""
        ...


def error_result(job: Job, error: PyroError) -> RunResult:
    """The result of a job that failed before its plan could run (nothing booted)."""
    environment = job.plan.environment
    return RunResult(
        ok=False,
        name=job.name,
        plan_digest=job.plan.digest,
        environment=environment.name if environment else None,
        environment_digest=environment.digest if environment else None,
        backend=None,
        vm_id=None,
        exit_code=None,
        error=error.to_dict(),
        duration_ms=0,
        steps=[],
    )


def retryable(job: Job, result: RunResult) -> bool:
    """Whether another attempt may help: the guest never started, or the node was lost
    while the run had no network (with network it may have had effects)."""
    if result.ok or result.error is None:
        return False
    if result.error.get("type") == NODE_LOST:
        from pyro.plan.model import BootStep

        boot = next((s for s in job.plan.steps if isinstance(s, BootStep)), None)
        return boot is not None and boot.network.policy == "off"
    return result.failed_step == "boot"


def dispatch(jobs: Iterable[Job], executor: Executor) -> Generator[RunResult, None, None]:
    """Run every job on ``executor``; yield each final result as it finishes.

    Each result carries ``instance`` (values, attempt, node). Leaving early (Ctrl-C, the
    generator closed) cancels what still runs.
    """
    running: dict[concurrent.futures.Future[RunResult], tuple[Job, int, frozenset[str]]] = {}
    for job in jobs:
        running[executor.submit(job, 1, frozenset())] = (job, 1, frozenset())
    try:
        while running:
            done, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                job, attempt, avoid = running.pop(future)
                result = _outcome(job, future)
                info = result.instance or InstanceInfo()
                result.instance = info.model_copy(update={"values": job.values, "attempt": attempt})
                if retryable(job, result) and attempt <= job.retries:
                    tried = avoid | ({info.node} if info.node else frozenset())
                    running[executor.submit(job, attempt + 1, tried)] = (job, attempt + 1, tried)
                    continue
                yield result
    except BaseException:  # GeneratorExit (closed early) and Ctrl-C too
        if running:
            executor.cancel()
        raise


class Dispatch(Iterator[RunResult]):
    """The results of a dispatch as they finish; ``total`` is how many will come.

    Closing it (or dropping it unfinished) cancels what still runs, then releases the
    executor.
    """

    def __init__(self, jobs: list[Job], executor: Executor) -> None:
        self.total = len(jobs)
        self._executor = executor
        self._results = dispatch(jobs, executor)

    def __next__(self) -> RunResult:
        try:
            return next(self._results)
        except StopIteration:
            self._executor.close()
            raise

    def close(self) -> None:
        """Cancel what still runs (nothing when all finished) and release the executor."""
        self._results.close()
        self._executor.close()


def _outcome(job: Job, future: concurrent.futures.Future[RunResult]) -> RunResult:
    try:
        return future.result()
    except PyroError as error:
        return error_result(job, error)


def exit_code(result: RunResult) -> int:
    """One result's exit code as ``pyro apply`` reports it."""
    if result.ok:
        return 0
    if result.exit_code is None:
        return CANNOT_RUN
    return result.exit_code or 1


def worst_exit_code(results: Iterable[RunResult]) -> int:
    """The exit code of many results: pyro could not run one (125), else a timeout (124),
    else the highest failing exit code, else 0."""
    codes = [exit_code(result) for result in results]
    for severe in (CANNOT_RUN, 124):
        if severe in codes:
            return severe
    return max(codes, default=0)
