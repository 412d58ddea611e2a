"""Template variables from the command line: ``--var NAME=VALUE`` and ``--vars-file FILE``.

Shared by every command that loads specs (validate, plan, apply)::

    @click.command()
    @click.argument("file")
    @vars_options
    @json_option
    @handle_errors
    def apply(file: str, var_items: tuple[str, ...], vars_file: str | None, as_json: bool) -> None:
        variables = parse_vars(var_items, vars_file)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from pyro.errors import UsageError

P = ParamSpec("P")
R = TypeVar("R")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def vars_options(func: Callable[P, R]) -> Callable[P, R]:
    """Add ``--var NAME=VALUE`` (repeatable; as ``var_items``) and ``--vars-file FILE``."""
    func = click.option(
        "--vars-file",
        type=click.Path(dir_okay=False),
        help="YAML or JSON mapping of template variables (--var wins).",
    )(func)
    return click.option(
        "--var",
        "var_items",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a template variable (repeatable).",
    )(func)


def parse_vars(
    items: Sequence[str], vars_file: str | Path | None = None, *, option: str = "--var"
) -> dict[str, object] | None:
    """Merge a vars file and ``NAME=VALUE`` items (items win); None when neither is given.

    ``option`` names the flag in error messages (e.g. ``--env`` for ``pyro run``).

    Raises:
        UsageError: an item is not NAME=VALUE.
        SpecError: the vars file is unreadable or not a mapping of names to values.
    """
    if not items and vars_file is None:
        return None
    variables: dict[str, object] = {}
    if vars_file is not None:
        from pyro.spec.load import load_vars_file  # the one YAML reader

        variables.update(load_vars_file(vars_file))
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name):
            raise UsageError(
                f"{option} {item!r} is not NAME=VALUE",
                f"write {option} NAME=VALUE, e.g. {option} GREETING=hi (NAME: letters, digits, _)",
            )
        variables[name] = value
    return variables
