"""``pyro schema run|environment [--output FILE]``: the JSON Schema editors validate specs with.

Generated from the spec models of the pyro that runs (draft-07, see
:mod:`pyro.spec.schema.draft07`), so it needs no ``schemas/`` folder: a wheel install has
none, and the schema always matches the pyro that will validate the spec. docs/specs.md
says where to put it for ``# yaml-language-server: $schema=...``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from pyro.cli.errors import handle_errors
from pyro.cli.output import marker
from pyro.errors import PyroError

KINDS = ("run", "environment")


@click.command()
@click.argument("kind", type=click.Choice(KINDS))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to FILE (folders created) instead of stdout.",
)
@handle_errors
def schema(kind: str, output: Path | None) -> None:
    """Print the JSON Schema (draft-07) of a Run or Environment spec, for editors.

    \b
    pyro schema run --output .pyro/run.schema.json
    then start a spec with: # yaml-language-server: $schema=.pyro/run.schema.json
    """
    from pyro.spec.schema import KIND_FILES, SCHEMAS, render_schema

    filename = KIND_FILES[kind]
    text = render_schema(SCHEMAS[filename], filename)
    if output is None:
        click.echo(text, nl=False)
        return
    _write(output, text)
    marker(f"wrote {output}")  # on stderr, and not with -q


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (an editor never reads half a schema).

    Raises:
        PyroError: the file cannot be written there.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise PyroError(
            f"cannot write the schema to {str(path)!r}: {reason}",
            "give --output a file path in a folder you can write to, or omit it for stdout",
        ) from error
