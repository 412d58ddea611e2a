"""``--stdin/--no-stdin``: whether pyro's own stdin becomes the guest command's.

By default it does when it is not a terminal (``pyro run … < file``, ``producer | pyro …``),
as ``docker run -i`` would: a terminal is left alone, so an interactive shell never makes a
command wait for typing. The stream is read in chunks while the command runs
(:mod:`pyro.guest.stdin`), never whole.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import BinaryIO, TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def stdin_option(command: F) -> F:
    """The ``--stdin/--no-stdin`` flag (parameter ``stdin_flag``: None means automatic)."""
    return click.option(
        "--stdin/--no-stdin",
        "stdin_flag",
        default=None,
        help="Give pyro's stdin to the command (default: only when it is not a terminal; "
        "otherwise the command reads /dev/null).",
    )(command)


def command_stdin(flag: bool | None) -> BinaryIO | None:
    """pyro's stdin as the command's, or None (the command reads ``/dev/null``): never with
    ``--no-stdin`` or without a stdin; with ``--stdin`` always; else when not a terminal."""
    stream = sys.stdin
    if flag is False or stream is None:
        return None
    try:
        fd = stream.fileno()
        os.fstat(fd)
    except (OSError, ValueError):  # closed, or replaced by something without a descriptor
        return None
    if flag is None and os.isatty(fd):
        return None
    return stream.buffer
