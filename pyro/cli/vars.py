"""Template variables from the command line: ``--var NAME=VALUE`` and ``--vars-file FILE``.

Shared by every command that loads specs (plan, apply).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pyro.errors import UsageError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_vars(items: Sequence[str], vars_file: Path | None = None) -> dict[str, object] | None:
    """Merge a vars file and ``NAME=VALUE`` items (items win); None when neither is given.

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
                f"--var {item!r} is not NAME=VALUE",
                "write --var NAME=VALUE, e.g. --var GREETING=hi (NAME: letters, digits, _)",
            )
        variables[name] = value
    return variables
