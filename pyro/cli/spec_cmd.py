"""``pyro validate FILE…`` and ``pyro plan FILE``: check specs and show what a run would do.

Thin: the spec loader, the inventory gatherer and the planner do the work; this module
only reads options, picks the documents and prints. Errors go through
:mod:`pyro.cli.errors`.
"""

from __future__ import annotations

from typing import Any

import click

from pyro.cli.envflags import NO_BUILD_ENV, forced_env, no_build_option
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.terminal import echo
from pyro.cli.vars import parse_vars, vars_options
from pyro.errors import SpecError


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@vars_options
@json_option
@handle_errors
def validate(
    files: tuple[str, ...], var_items: tuple[str, ...], vars_file: str | None, as_json: bool
) -> None:
    """Validate spec files and report every problem of every file (exit 1 if any)."""
    from pyro.spec.load import load_spec_documents

    variables = parse_vars(var_items, vars_file)
    reports: list[dict[str, Any]] = []
    for name in files:
        try:
            documents = load_spec_documents(name, vars=variables)
        except SpecError as exc:
            reports.append({"path": name, "ok": False, "documents": [], "issues": exc.issues})
            continue
        summary = [
            {"index": doc.index, "kind": doc.spec.kind, "name": doc.spec.metadata.name}
            for doc in documents
        ]
        reports.append({"path": name, "ok": True, "documents": summary, "issues": []})
    ok = all(report["ok"] for report in reports)
    if as_json:
        for report in reports:
            report["issues"] = [issue.to_dict() for issue in report["issues"]]
        echo_json({"ok": ok, "files": reports})
    else:
        _print_validation(reports)
    if not ok:
        raise SystemExit(1)


def _print_validation(reports: list[dict[str, Any]]) -> None:
    issue_count = 0
    for report in reports:
        if report["ok"]:
            count = len(report["documents"])
            click.echo(f"{report['path']}: ok ({count} document{'s' if count != 1 else ''})")
        for issue in report["issues"]:
            echo(issue.render())
            issue_count += 1
    bad = sum(1 for report in reports if not report["ok"])
    total = len(reports)
    if bad:
        click.echo(
            f"{bad} of {total} file{'s' if total != 1 else ''} invalid, "
            f"{issue_count} issue{'s' if issue_count != 1 else ''}"
        )
    else:
        click.echo(f"{total} file{'s' if total != 1 else ''} valid")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@vars_options
@click.option("--run", "run_name", metavar="NAME", help="Which Run document of FILE to plan.")
@click.option(
    "--offline",
    is_flag=True,
    help="Do not ask registries for digests (a pull is planned without one).",
)
@no_build_option
@json_option
@handle_errors
def plan(
    file: str,
    var_items: tuple[str, ...],
    vars_file: str | None,
    run_name: str | None,
    offline: bool,
    no_build: bool,
    as_json: bool,
) -> None:
    """Show what applying the Run spec in FILE would do (exit 1 when it is not applyable)."""
    from pyro.execute.prepare import make_plan, prepare

    variables = parse_vars(var_items, vars_file)
    with forced_env(NO_BUILD_ENV, "1", no_build):
        prepared = prepare(file, vars=variables, run_name=run_name)
        if prepared.loaded.instances:
            from pyro.cli.many_cmd import plan_many

            plan_many(prepared, offline, as_json)
            return
        result = make_plan(prepared, resolve_remote=not offline)
    if as_json:
        from pyro.plan.model import render_json

        click.echo(render_json(result), nl=False)
    else:
        from pyro.plan.render import render_text

        echo(render_text(result), nl=False)
    if not result.applyable:
        raise SystemExit(1)
