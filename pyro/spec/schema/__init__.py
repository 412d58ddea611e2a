"""JSON Schemas of the spec documents, generated from the pydantic models.

The MCP server hands them to clients; the checked-in copies (:mod:`pyro.spec.schema.files`)
let editors validate specs, and :mod:`pyro.spec.schema.docs` renders docs/specs.md from them.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from pyro.spec.model import EnvironmentSpec, RunSpec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_ID = "https://pyro.dev/schemas/v1/"

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
