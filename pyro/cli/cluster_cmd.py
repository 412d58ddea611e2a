"""``pyro cluster``: how this host joins a Ray cluster that ``pyro apply --on`` runs on."""

from __future__ import annotations

import json

import click

from pyro.cli.errors import echo_json, handle_errors, json_option


@click.group()
def cluster() -> None:
    """Join Ray clusters that 'pyro apply --on ray://HEAD:PORT' runs on (docs/scale-out.md)."""


@cluster.command()
@json_option
@handle_errors
def resources(as_json: bool) -> None:
    """Print the --resources this host should join a Ray cluster with (from pyro doctor)."""
    from pyro.cluster.nodes import node_resources

    found = node_resources()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("this host can run no guest: see 'pyro doctor'", err=True)
        raise SystemExit(1)
    click.echo(f"--resources='{json.dumps(found, sort_keys=True)}'")


@cluster.command()
@click.option(
    "--on",
    "address",
    metavar="ray://HOST:PORT",
    envvar="PYRO_CLUSTER",
    required=True,
    help="The cluster to ask (env PYRO_CLUSTER).",
)
@json_option
@handle_errors
def doctor(address: str, as_json: bool) -> None:
    """Ask every node what it can run; exit 1 if one joined with other resources."""
    from pyro.cluster.address import parse_cluster
    from pyro.cluster.ray_exec import node_reports

    reports = node_reports(parse_cluster(address))
    if as_json:
        echo_json(reports)
    else:
        for report in reports:
            status = "ok" if report["ok"] else "MISMATCH"
            click.echo(f"{report['node']} {report['address']} {status}")
            click.echo(f"  joined with: {json.dumps(report['joined_with'], sort_keys=True)}")
            answer = report["resources"]
            said = "no answer" if answer is None else json.dumps(answer, sort_keys=True)
            click.echo(f"  doctor says: {said}")
    if not all(report["ok"] for report in reports):
        raise SystemExit(1)
