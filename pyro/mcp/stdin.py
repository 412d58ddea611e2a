"""The ``stdin`` argument of ``vm_run``, ``vm_exec`` and ``task_exec``: text a client sends
whole in its request (MCP cannot stream it), so it is bounded: at most
``PYRO_MCP_STDIN_MAX_BYTES`` UTF-8 bytes (default :data:`DEFAULT_MAX_BYTES`), set in the
server's environment by whoever starts it."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field

from pyro.errors import UsageError

MAX_BYTES_ENV = "PYRO_MCP_STDIN_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 20
#: What the setting may raise the cap to (a request holds it in memory, twice).
LARGEST_MAX_BYTES = 256 << 20

StdinArg = Annotated[
    str | None,
    Field(description=f"Text for the command's stdin (at most {MAX_BYTES_ENV}, 1 MiB)."),
]


def max_bytes() -> int:
    """The cap in force.

    Raises:
        UsageError: the setting is not a whole number from 0 to :data:`LARGEST_MAX_BYTES`.
    """
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not (raw.isascii() and raw.isdigit()) or int(raw) > LARGEST_MAX_BYTES:
        raise UsageError(
            f"{MAX_BYTES_ENV} is {raw!r}; it must be a number of bytes from 0 to "
            f"{LARGEST_MAX_BYTES}",
            f"fix {MAX_BYTES_ENV} in the MCP server's environment, or unset it (1 MiB)",
        )
    return int(raw)


def stdin_bytes(stdin: str | None) -> bytes | None:
    """``stdin`` as the command's input, checked against the cap.

    Raises:
        UsageError: it is larger than the cap (naming the setting that raises it).
    """
    if stdin is None:
        return None
    data = stdin.encode("utf-8", "surrogatepass")
    cap = max_bytes()
    if len(data) > cap:
        raise UsageError(
            f"stdin is {len(data)} bytes; this server takes at most {cap} bytes of stdin",
            f"send less, or start the server with {MAX_BYTES_ENV} set higher "
            f"(at most {LARGEST_MAX_BYTES} bytes)",
        )
    return data
