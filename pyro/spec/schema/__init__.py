"""JSON Schemas of the spec documents, generated from the pydantic models.

Two forms of one schema: :func:`build_schema` (2020-12, pydantic's own vocabulary) is what
the MCP server hands to clients and what :mod:`pyro.spec.schema.docs` renders docs/specs.md
from; :func:`editor_schema` (draft-07, see :mod:`pyro.spec.schema.draft07`) is what editors
get, from ``pyro schema KIND`` and from the checked-in copies (:mod:`pyro.spec.schema.files`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from pyro.spec.environment import EnvironmentSpec
from pyro.spec.model import RunSpec
from pyro.spec.schema.draft07 import to_draft07

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_ID = "https://pyro.dev/schemas/v1/"

SCHEMAS: dict[str, type[BaseModel]] = {
    "run.schema.json": RunSpec,
    "environment.schema.json": EnvironmentSpec,
}
#: ``pyro schema KIND`` names -> schema file name.
KIND_FILES = {"run": "run.schema.json", "environment": "environment.schema.json"}


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


def editor_schema(model: type[BaseModel], filename: str) -> dict[str, Any]:
    """The draft-07 JSON Schema of ``model`` that editors (yaml-language-server) implement."""
    return to_draft07(build_schema(model, filename))


def render_schema(model: type[BaseModel], filename: str) -> str:
    """The editor schema file's exact text: sorted keys, two-space indent, trailing newline."""
    schema = editor_schema(model, filename)
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
