"""The files generated from the schemas and checked in: ``pyro/data/schemas/*.json`` (the
draft-07 editor schemas ``pyro schema KIND`` prints; reachable as ``schemas/``, and as the
``.pyro/`` links beside the shipped specs that their ``# yaml-language-server: $schema=``
modelines name) and ``docs/specs.md``.

``python -m pyro.spec.schema --write`` regenerates the schemas, ``--check`` exits 1 when
they drifted from the models, and ``--docs`` regenerates ``docs/specs.md``. A developer
tool: nothing a user runs imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pyro.spec.schema import SCHEMAS, render_schema
from pyro.spec.schema.docs import render_docs

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "data" / "schemas"
DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "specs.md"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, model in SCHEMAS.items():
        path = directory / filename
        path.write_text(render_schema(model, filename), encoding="utf-8")
        written.append(path)
    return written


def drifted_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files in ``directory`` that are missing or differ from the models."""
    drifted = []
    for filename, model in SCHEMAS.items():
        path = directory / filename
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != render_schema(model, filename):
            drifted.append(filename)
    return drifted


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pyro.spec.schema``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m pyro.spec.schema", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the schema files")
    group.add_argument("--check", action="store_true", help="exit 1 if the schemas drifted")
    group.add_argument("--docs", action="store_true", help="regenerate docs/specs.md")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema folder")
    parser.add_argument("--docs-path", type=Path, default=DOCS_PATH, help="docs file")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_schemas(args.dir):
            sys.stdout.write(f"wrote {path}\n")
        return 0
    if args.check:
        drifted = drifted_schemas(args.dir)
        for name in drifted:
            sys.stderr.write(f"{name} is out of date; run 'make schemas'\n")
        return 1 if drifted else 0
    args.docs_path.write_text(render_docs(), encoding="utf-8")
    sys.stdout.write(f"wrote {args.docs_path}\n")
    return 0
