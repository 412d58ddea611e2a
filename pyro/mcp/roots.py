"""Which host folders an MCP caller may name paths in: the server's root and the client's roots.

The rule itself is :meth:`pyro.host.confine.Root.confine`; this module only decides the folders,
once per tool call:

* ``$PYRO_MCP_ROOT`` when set: the server's user chose it, and nothing widens it.
* Otherwise the server's working directory, except ``/`` (a root of ``/`` would confine
  nothing; MCP hosts such as Claude Desktop start servers there), which opens no folder.
* When the client declares the MCP ``roots`` capability, the folders are its declared
  ``file://`` roots instead, each narrowed to ``$PYRO_MCP_ROOT`` when that is set (a
  declared root above it becomes it; one beside it is dropped). The client application is
  the user's own configuration (which folders this session works on), unlike the tool
  arguments a model writes; the working-directory default gives way to it. Roots that are
  not ``file://`` URIs or not existing folders are ignored; a client declaring none opens
  no folder. A declared root that is ``/`` (``file:///``, ``file://localhost/%2e%2e/``, a
  link to ``/``) is dropped like the working-directory ``/`` (with ``$PYRO_MCP_ROOT`` set it
  is narrowed to it instead, like any root above it); when none is left, every host path
  is refused with a hint saying how to fix the client's configuration.

A tool that can reach host paths takes a :data:`ClientRoots` parameter; the MCP SDK fills it
(asking the client with ``roots/list``) before the tool runs, and it is not part of the
tool's input schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import ListRoots, Resolve
from mcp.types import ListRootsResult

from pyro.errors import UsageError
from pyro.host.confine import Root

ROOT_ENV = "PYRO_MCP_ROOT"


def ask_client_roots(ctx: Context) -> ListRoots | None:
    """Resolver: ask for the client's roots when it declares the capability, else None."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return None
    return ListRoots()


#: A tool parameter the SDK fills with the client's roots (None: it declares none).
ClientRoots = Annotated[ListRootsResult | None, Resolve(ask_client_roots)]


def mcp_root(declared: ListRootsResult | None = None) -> Root:
    """The folders this call's host paths must stay in (see the module docstring).

    Raises:
        UsageError: ``$PYRO_MCP_ROOT`` is not an existing folder.
    """
    limit = _server_root()
    if declared is None:
        if limit is not None:
            return Root(
                limit.folders,
                why=f"it is the server's {ROOT_ENV}, which only the server's user can change",
            )
        cwd = os.getcwd()
        if Path(cwd) == Path("/"):
            return Root(
                [],
                why=f"the MCP server runs in /, which pyro does not open to MCP clients; "
                f"the server's user can set {ROOT_ENV} to a project folder",
            )
        return Root(
            [cwd],
            why="it is the MCP server's working directory; the server's user can choose "
            f"another with {ROOT_ENV}",
        )
    folders = [path for path in (_folder(str(root.uri)) for root in declared.roots) if path]
    if limit is not None:
        folders = [inside for folder in folders if (inside := _within(folder, limit.folders[0]))]
        return Root(
            folders,
            why=f"they are the roots your MCP client declared, within the server's {ROOT_ENV}",
        )
    whole_host = Path("/") in folders
    folders = [folder for folder in folders if folder != Path("/")]
    why = "they are the roots your MCP client declared"
    if whole_host:
        why = (
            f"{why if folders else 'your MCP client declared no usable root'}; it declared / "
            "(the whole host), which pyro does not open to MCP clients: declare the project "
            "folder as the root in the client's configuration (or the server's user can set "
            f"{ROOT_ENV})"
        )
    return Root(folders, why=why)


def _server_root() -> Root | None:
    text = os.environ.get(ROOT_ENV) or None
    if text is None:
        return None
    try:
        return Root([text])
    except UsageError:
        raise UsageError(
            f"{ROOT_ENV}={text!r} is not an existing folder",
            f"set {ROOT_ENV} to the folder MCP clients may use (or unset it to use the "
            "server's working directory)",
        ) from None


def _folder(uri: str) -> Path | None:
    """The existing folder a ``file://`` root names (resolved), else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    text = unquote(parsed.path)
    if not text.startswith("/") or "\x00" in text:
        return None
    path = Path(os.path.realpath(text))
    return path if path.is_dir() else None


def _within(folder: Path, limit: Path) -> Path | None:
    """The part of ``folder`` inside ``limit``: itself, ``limit``, or None when they are apart."""
    if folder.is_relative_to(limit):
        return folder
    if limit.is_relative_to(folder):
        return limit
    return None
