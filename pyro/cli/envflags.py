"""Flags that act through an environment variable: ``--cold`` and ``--no-build``.

They go through the environment so that the inventory (what the planner sees) and the
runner both see them without threading a flag through every layer; the SDK and the MCP
server honour the same variables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import click

#: pyro.environments.catalog.NO_BUILD_ENV (not imported: it would load the catalog's modules).
NO_BUILD_ENV = "PYRO_NO_BUILD"

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def forced_env(name: str, value: str, when: bool) -> Iterator[None]:
    """``$name=value`` for the body, when ``when``; restored afterwards (for callers that
    run commands in-process)."""
    if not when:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def no_build_option(func: Callable[P, R]) -> Callable[P, R]:
    """The shared ``--no-build`` flag; the callback receives it as ``no_build``."""
    return click.option(
        "--no-build",
        is_flag=True,
        help="Fail instead of building an environment locally (sets PYRO_NO_BUILD=1): for CI "
        "that pulls from its registry.",
    )(func)
