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
