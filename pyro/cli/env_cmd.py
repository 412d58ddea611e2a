"""``pyro env list|inspect|pull|build|push|prune``: the environment cache from the shell.

Thin: :mod:`pyro.environments.service` does the work. Human mode writes phase markers
(``[pull] phase=install environment=X``) to stderr, and on a terminal a live progress line
(:mod:`pyro.cli.progress`); ``--json`` prints one JSON document on stdout and nothing else.
"""

from __future__ import annotations

from typing import Any

import click

from pyro.cli.completion import environments
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.progress import progress_reporter
from pyro.cli.terminal import echo
from pyro.environments.cache.store import Install
from pyro.environments.service import EnvironmentService

INSECURE_HELP = "Allow plain http to a registry that is not on the loopback interface."


@click.group()
def env() -> None:
    """List, inspect, pull, build, push and prune environments."""


@env.command(name="list")
@json_option
@handle_errors
def list_(as_json: bool) -> None:
    """List catalog and installed environments with their cache state."""
    found = EnvironmentService().list_environments()
    if as_json:
        echo_json({"ok": True, "environments": [s.model_dump(mode="json") for s in found]})
        return
    rows = [("NAME", "STATE", "VERSION", "DIGEST", "SOURCE")]
    for status in found:
        state = status.state if not status.reason else f"{status.state} ({status.reason})"
        digest = (status.digest or "-")[:19]
        rows.append((status.name, state, status.version or "-", digest, status.source or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
        echo("  ".join([*cells, row[4]]).rstrip())


@env.command()
@click.argument("environment", shell_complete=environments)
@click.option("--verify", is_flag=True, help="Hash every artifact instead of the quick check.")
@json_option
@handle_errors
def inspect(environment: str, verify: bool, as_json: bool) -> None:
    """Show what the cache holds for ENVIRONMENT (name, spec path or oci:// reference)."""
    details = EnvironmentService().inspect(environment, verify=verify)
    if as_json:
        echo_json({"ok": True, "environment": details.model_dump(mode="json")})
        return
    data = details.model_dump(mode="json", exclude={"manifest"})
    for key in ("name", "state", "reason", "version", "digest", "spec_digest", "source"):
        if data.get(key) not in (None, ""):
            echo(f"{key.replace('_', '-')}: {data[key]}")
    click.echo(f"in-catalog: {'yes' if details.in_catalog else 'no'}")
    if details.manifest is not None:
        for role, artifact in sorted(details.manifest.get("artifacts", {}).items()):
            echo(f"{role}: {artifact['file']} {artifact['size']} bytes {artifact['sha256']}")
        click.echo(f"path: {details.path}")
        click.echo(f"verified: {'yes (sha256 of every artifact)' if details.verified else 'quick'}")


@env.command()
@click.argument("environment", shell_complete=environments)
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@json_option
@handle_errors
def pull(environment: str, insecure: bool, as_json: bool) -> None:
    """Install ENVIRONMENT: nothing to do if valid, else pull it (or build it if no source)."""
    with progress_reporter("pull", as_json) as report:
        install = EnvironmentService().pull(environment, insecure=insecure, progress=report)
    _show_install(install, as_json)


@env.command()
@click.argument("spec_or_name", shell_complete=environments)
@click.option("--force", is_flag=True, help="Build even when nothing changed.")
@json_option
@handle_errors
def build(spec_or_name: str, force: bool, as_json: bool) -> None:
    """Build an environment from a catalog name or an Environment spec file, and install it.

    An install built from the same inputs is kept (nothing to do) unless --force.
    """
    with progress_reporter("build", as_json) as report:
        install = EnvironmentService().build(spec_or_name, progress=report, force=force)
    _show_install(install, as_json)


@env.command()
@click.argument("environment", shell_complete=environments)
@click.argument("ref")
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@json_option
@handle_errors
def push(environment: str, ref: str, insecure: bool, as_json: bool) -> None:
    """Verify the installed ENVIRONMENT and push it to REF (oci://REGISTRY/REPO:TAG)."""
    with progress_reporter("push", as_json) as report:
        digest = EnvironmentService().push(environment, ref, insecure=insecure, progress=report)
    if as_json:
        echo_json({"ok": True, "environment": environment, "ref": ref, "digest": digest})
    else:
        click.echo(f"pushed {environment} to {ref}@{digest}")


@env.command()
@json_option
@handle_errors
def prune(as_json: bool) -> None:
    """Remove invalid and unused installs and leftovers of interrupted pulls and builds."""
    pruned = EnvironmentService().prune()
    freed = sum(item.size for item in pruned)
    if as_json:
        items = [{"path": str(p.path), "reason": p.reason, "bytes": p.size} for p in pruned]
        echo_json({"ok": True, "pruned": items, "freedBytes": freed})
        return
    for item in pruned:
        click.echo(f"removed {item.path} ({item.reason}, {item.size} bytes)")
    click.echo(f"pruned {len(pruned)} item{'s' if len(pruned) != 1 else ''}, freed {freed} bytes")


def _show_install(install: Install, as_json: bool) -> None:
    data: dict[str, Any] = {
        "name": install.name,
        "version": install.version,
        "digest": install.digest,
        "source": install.source,
        "path": str(install.dir),
        "kernel": str(install.kernel),
        "rootfs": str(install.rootfs),
        "warnings": list(install.warnings),
    }
    if as_json:
        echo_json({"ok": True, "environment": data})
    else:
        echo(f"{install.name} {install.version} {install.digest} {install.dir}")
