"""JSON Schemas of the spec documents, generated from the pydantic models.

The generated files are checked in (``pyro/data/schemas/``, also reachable as ``schemas/``)
so editors can validate specs through the ``# yaml-language-server: $schema=...`` modeline.
``python -m pyro.spec.schema --write`` regenerates them, ``--check`` exits 1 when they
drifted from the models, and ``--docs`` regenerates ``docs/specs.md`` from them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pyro.spec.model import EnvironmentSpec, RunSpec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_ID = "https://pyro.dev/schemas/v1/"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "data" / "schemas"
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "specs.md"

SCHEMAS: dict[str, type[BaseModel]] = {
    "run.schema.json": RunSpec,
    "environment.schema.json": EnvironmentSpec,
}


def build_schema(model: type[BaseModel], filename: str) -> dict[str, Any]:
    """The JSON Schema of ``model`` by alias, with a stable ``$id`` and the 2020-12 dialect."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    _tighten(schema)
    schema["$id"] = SCHEMA_BASE_ID + filename
    schema["$schema"] = SCHEMA_DIALECT
    return schema


def _tighten(node: Any) -> None:
    """Post-process pydantic's output so the schema is as strict as the models.

    Dicts with constrained keys come out as ``patternProperties`` alone, which lets any other
    key through; the models refuse those, so the schema must too. Per-property titles are
    pydantic's guesses from attribute names ("Timeoutseconds") and only add noise.
    """
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    if "patternProperties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        for value in properties.values():
            if isinstance(value, dict):
                value.pop("title", None)
    for value in node.values():
        _tighten(value)


def render_schema(model: type[BaseModel], filename: str) -> str:
    """The schema file's exact text: sorted keys, two-space indent, trailing newline."""
    schema = build_schema(model, filename)
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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
    from pyro.spec.schema_docs import render_docs

    args.docs_path.write_text(render_docs(), encoding="utf-8")
    sys.stdout.write(f"wrote {args.docs_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
