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
        UsageError: an item is not NAME=VALUE, or the vars file is unreadable or not a
            mapping of names to values.
    """
    if not items and vars_file is None:
        return None
    variables: dict[str, object] = {}
    if vars_file is not None:
        variables.update(_read_vars_file(vars_file))
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name):
            raise UsageError(
                f"--var {item!r} is not NAME=VALUE",
                "write --var NAME=VALUE, e.g. --var GREETING=hi (NAME: letters, digits, _)",
            )
        variables[name] = value
    return variables


def _read_vars_file(path: Path) -> dict[str, object]:
    import yaml

    hint = "a vars file is a YAML or JSON mapping of NAME: value"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read vars file {path}: {reason}", hint) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise UsageError(f"vars file {path}{where} is not valid YAML", hint) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"vars file {path} is not a mapping", hint)
    for key in data:
        if not isinstance(key, str) or not _NAME.match(key):
            raise UsageError(f"vars file {path}: {key!r} is not a variable name", hint)
    return dict(data)
