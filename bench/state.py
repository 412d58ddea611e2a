"""Task state figures for bench/run.py (group ``state``): pause, resume and fork against a
cold ``task create``, all through the SDK in this process.

* ``task_create_s``  ``create_task("debian:12")``: a cold boot plus the baseline snapshot
* ``task_pause_s``   ``pause_task`` of a running task (memory, devices and disk saved, VMM
                     ended)
* ``task_resume_s``  ``resume_task`` of it, to its first exec
* ``task_fork_s``    ``fork_task`` of a running task, to the first exec in the fork
* ``fork8_s``        eight ``fork_task(id, snapshot="baseline")`` at once, to the first exec
                     in each (cold boots from the snapshot)
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

ENV = "debian:12"


def state_figures(runs: int) -> dict[str, list[float]]:
    from pyro.sdk import Pyro

    pyro = Pyro()
    samples: dict[str, list[float]] = {
        key: [] for key in ("task_create_s", "task_pause_s", "task_resume_s", "task_fork_s")
    }
    samples["fork8_s"] = []
    made: list[str] = []
    try:
        for _ in range(runs):
            begun = time.perf_counter()
            task = pyro.create_task(ENV)
            samples["task_create_s"].append(time.perf_counter() - begun)
            made.append(task.id)
            _exec(pyro, task.id)

            begun = time.perf_counter()
            pyro.pause_task(task.id)
            samples["task_pause_s"].append(time.perf_counter() - begun)
            begun = time.perf_counter()
            pyro.resume_task(task.id)
            _exec(pyro, task.id)
            samples["task_resume_s"].append(time.perf_counter() - begun)

            begun = time.perf_counter()
            fork = pyro.fork_task(task.id)
            made.append(fork.id)
            _exec(pyro, fork.id)
            samples["task_fork_s"].append(time.perf_counter() - begun)

            begun = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(_fork_and_exec, [pyro] * 8, [task.id] * 8))
            samples["fork8_s"].append(time.perf_counter() - begun)
            made.extend(ids)
            for task_id in [*ids, fork.id, task.id]:
                pyro.delete_task(task_id)
    finally:
        for task_id in made:
            pyro.delete_task(task_id)
    return samples


def _exec(pyro: Any, task_id: str) -> None:
    result = pyro.exec_task(task_id, ["true"])
    if result.exit_code != 0:
        raise SystemExit(f"bench: exec in task {task_id} failed: {result.stderr}")


def _fork_and_exec(pyro: Any, task_id: str) -> str:
    fork = pyro.fork_task(task_id, snapshot="baseline")
    _exec(pyro, fork.id)
    return str(fork.id)
