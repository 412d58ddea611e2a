"""``pyro mcp serve``: pyro's tools for MCP hosts (Claude Desktop, Cursor, agents) over stdio.

While serving, stdout carries nothing but the protocol: the MCP SDK points fd 1 at stderr for
the server's lifetime, so stray output of pyro or its child processes cannot corrupt a
message, and logs go to stderr. ``mcp`` is imported only when the server starts, so
``pyro --help`` stays fast.
"""

from __future__ import annotations

import click

from pyro.cli.errors import handle_errors
from pyro.mcp.profiles import DEFAULT_PROFILE, PROFILES, profile_choices


@click.group()
def mcp() -> None:
    """Serve pyro's tools over the Model Context Protocol."""


@mcp.command()
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default=DEFAULT_PROFILE,
    show_default=True,
    help=f"Which tools to offer: {profile_choices()}.",
)
@click.option(
    "--warm-pool",
    type=click.IntRange(0, 8),
    default=0,
    show_default=True,
    metavar="N",
    help="Keep up to N restored guests ready for the next vm_run/apply of the shape last "
    "run (network off or egress); each holds its memory while it waits. Deleted when the "
    "server exits.",
)
@handle_errors
def serve(profile: str, warm_pool: int) -> None:
    """Serve MCP on stdin/stdout until the client disconnects.

    Host paths a client names (spec files, environment paths, seed folders) must be inside
    the roots the client declares, else $PYRO_MCP_ROOT, else the working directory (a set
    $PYRO_MCP_ROOT also bounds the client's roots); artifacts go to a new folder under
    .pyro-artifacts/ there.

    \b
    Host configuration (e.g. Claude Desktop, Cursor):
      {"mcpServers": {"pyro": {"command": "pyro", "args": ["mcp", "serve"]}}}
    """
    from pyro.mcp.roots import mcp_root
    from pyro.mcp.server import build_server
    from pyro.sdk import Pyro

    mcp_root()  # a PYRO_MCP_ROOT that is no folder is refused now, not at every call
    with Pyro(warm_pool=warm_pool) as sdk:
        build_server(profile, sdk=sdk).run("stdio")
