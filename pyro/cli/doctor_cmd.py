"""``pyro doctor [--json]``: what this host can run; exit 1 when any check FAILs."""

from __future__ import annotations

from typing import Any

import click

from pyro.cli.errors import echo_json, handle_errors, json_option

_MARK = {"PASS": "ok  ", "WARN": "warn", "FAIL": "FAIL"}


@click.command()
@json_option
@handle_errors
def doctor(as_json: bool) -> None:
    """Check what this host can run."""
    from pyro.host.doctor import doctor_report

    report = doctor_report()
    if as_json:
        echo_json(report)
    else:
        _print(report)
    if not report["ok"]:
        raise click.exceptions.Exit(1)


def _print(report: dict[str, Any]) -> None:
    plat, host = report["platform"], report["host"]
    click.echo(
        f"pyro {plat['pyro']} on {plat['system']} {plat['release']} ({plat['machine']}), "
        f"Python {plat['python']}"
    )
    click.echo(f"host: {host['cpus']} CPUs, {host['memory_mib']} MiB, KVM: {host['kvm']}")
    click.echo(f"  {report['kvm']['explanation']}")
    click.echo("backends:")
    for b in report["backends"]:
        state = "usable" if b["usable"] and b["can_exec"] else "not usable"
        version = b["version"] or "-"
        click.echo(
            f"  {b['name']:<12} {version:<10} {state}" + (f": {b['reason']}" if b["reason"] else "")
        )
    click.echo(f"selected backend: {report['selected_backend'] or 'none'}")
    click.echo("checks:")
    for c in report["checks"]:
        click.echo(f"  [{_MARK[c['status']]}] {c['name']}: {c['detail']}")
