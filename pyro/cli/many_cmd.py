"""``pyro apply`` and ``pyro plan`` of many instances: a matrix here, or any spec on a cluster.

Human mode says each instance as it finishes (one marker line; its failing step's error
output follows) and, on a terminal, keeps a count of done/running/failed on stderr;
``--json`` prints one JSON list of RunResults, ``--junit`` one suite per instance. The
exit code is the worst instance's (:func:`pyro.cluster.dispatch.worst_exit_code`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pyro.cli.errors import echo_json
from pyro.cli.output import marker, quiet
from pyro.cli.terminal import echo, is_tty

if TYPE_CHECKING:
    from pyro.execute.prepare import Prepared
    from pyro.execute.result import RunResult
    from pyro.plan.model import Plan

#: The tail of a failed instance's error output shown in human mode.
TAIL_CHARS = 2000


def mentions_matrix(file: str) -> bool:
    """Whether FILE could hold a matrix (cheap: the word is in it); unreadable: False
    (the loader says why)."""
    try:
        with open(file, "rb") as stream:
            return b"matrix" in stream.read(1024 * 1024 + 1)
    except OSError:
        return False


def is_many(file: str, vars: Mapping[str, object] | None, run_name: str | None) -> bool:
    """Whether the Run FILE names is a matrix (loaded only when the word is in it)."""
    if not mentions_matrix(file):
        return False
    from pyro.execute.prepare import prepare

    return bool(prepare(file, vars=vars, run_name=run_name).loaded.instances)


def apply_many(
    file: str,
    vars: Mapping[str, object] | None,
    run_name: str | None,
    cluster: str | None,
    junit: str | None,
    as_json: bool,
    prepull: bool = False,
    allow_tcg: bool = False,
) -> None:
    """Run every instance; report; exit with the worst instance's code."""
    from pyro.cluster.dispatch import worst_exit_code
    from pyro.sdk import Pyro

    results: list[RunResult] = []
    with Pyro(cluster=cluster, allow_tcg=allow_tcg and cluster is not None) as pyro:
        stream = pyro.apply_many(file, vars=vars, run_name=run_name, prepull=prepull)
        counter = _Counter(stream.total, show=not as_json and not quiet() and is_tty(sys.stderr))
        try:
            for result in stream:
                results.append(result)
                counter.clear()
                if not as_json:
                    _say(result)
                counter.done(result)
        finally:
            counter.clear()
            stream.close()
    if junit:
        from pyro.cli.junit import render_junit_many, write_report

        write_report(render_junit_many(results), Path(junit))
    if as_json:
        echo_json([result.model_dump(mode="json") for result in results])
    else:
        failed = sum(1 for result in results if not result.ok)
        marker(f"[matrix] instances={len(results)} ok={len(results) - failed} failed={failed}")
    raise SystemExit(worst_exit_code(results))


def _say(result: RunResult) -> None:
    info = result.instance
    where = f" node={info.node}" if info and info.node else ""
    attempt = f" attempt={info.attempt}" if info and info.attempt > 1 else ""
    code = result.exit_code if result.exit_code is not None else "none"
    status = "ok" if result.ok else "failed"
    marker(
        f"[matrix] {result.name} {status} exit_code={code} backend={result.backend}"
        f"{where}{attempt} duration_ms={result.duration_ms}"
    )
    if not result.ok:
        if result.error is not None:
            echo(f"  error: {result.error.get('message')}", err=True)
        elif result.stderr:
            echo(result.stderr[-TAIL_CHARS:].rstrip("\n"), err=True)


class _Counter:
    """done/running/failed on one terminal line, rewritten in place."""

    def __init__(self, total: int, *, show: bool) -> None:
        self.total, self.show = total, show
        self.finished = self.failed = 0

    def done(self, result: RunResult) -> None:
        self.finished += 1
        self.failed += 0 if result.ok else 1
        if self.show:
            running = max(0, self.total - self.finished)
            sys.stderr.write(
                f"\r[matrix] done={self.finished} running={running} failed={self.failed}"
            )
            sys.stderr.flush()

    def clear(self) -> None:
        if self.show and self.finished:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def plan_many(prepared: Prepared, offline: bool, as_json: bool) -> None:
    """``pyro plan`` of a matrix: every instance's plan (a JSON list with ``--json``)."""
    from pyro.cluster.instances import plan_jobs

    plans: list[Plan] = [job.plan for job in plan_jobs(prepared, resolve_remote=not offline)]
    if as_json:
        echo_json([plan.model_dump(mode="json", by_alias=True) for plan in plans])
    else:
        from pyro.plan.render import render_text

        click.echo(f"matrix: {len(plans)} instances of {prepared.run.metadata.name}")
        for plan in plans:
            click.echo(f"  {plan.metadata.name}  {plan.digest[:19]}")
        for plan in plans:
            click.echo()
            echo(render_text(plan), nl=False)
    if not all(plan.applyable for plan in plans):
        raise SystemExit(1)
