"""Input schemas for tools that take a whole spec document.

A ``spec`` argument is received as plain JSON data and validated by pyro's one loader (so
its errors carry JSON pointers, and ``vars`` templates are rendered before validation), but
the schema a client sees is the spec model's own: the checked-in ``run.schema.json``. Its
``$defs`` are hoisted into the tool's input schema so every ``$ref`` resolves from the root,
which is what MCP hosts and model providers expect.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel

from pyro.spec.model import EnvironmentSpec, RunSpec
from pyro.spec.schema import build_schema

#: def name in a tool's input schema -> (model, schema file name).
SPEC_MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "RunSpec": (RunSpec, "run.schema.json"),
    "EnvironmentSpec": (EnvironmentSpec, "environment.schema.json"),
}


@cache
def _spec_schema(def_name: str) -> dict[str, Any]:
    model, filename = SPEC_MODELS[def_name]
    return build_schema(model, filename)


def spec_schema(def_name: str) -> dict[str, Any]:
    """A copy of the JSON Schema of spec model ``def_name`` (e.g. ``"RunSpec"``)."""
    return copy.deepcopy(_spec_schema(def_name))


def embed_spec_schema(
    parameters: dict[str, Any], prop: str, def_names: Sequence[str], description: str
) -> dict[str, Any]:
    """Return ``parameters`` with property ``prop`` described by the given spec schemas.

    The property keeps its default (an optional ``spec`` stays optional and nullable).

    Raises:
        ValueError: ``prop`` is not a property, or two schemas define one ``$defs`` name
            differently (a bug in the models, caught when the server is built).
    """
    schema = copy.deepcopy(parameters)
    properties = schema.get("properties", {})
    if prop not in properties:
        raise ValueError(f"the tool has no parameter '{prop}'")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    refs: list[dict[str, Any]] = []
    for name in def_names:
        document = spec_schema(name)
        nested = document.pop("$defs", {})
        for key in ("$id", "$schema"):
            document.pop(key, None)
        for def_name, body in {**nested, name: document}.items():
            if def_name in defs and defs[def_name] != body:
                raise ValueError(f"schema definition '{def_name}' is defined twice, differently")
            defs[def_name] = body
        refs.append({"$ref": f"#/$defs/{name}"})
    original = properties[prop]
    choices = [*refs, {"type": "null"}] if "default" in original else refs
    described: dict[str, Any] = {"anyOf": choices} if len(choices) > 1 else dict(choices[0])
    described["description"] = description
    if "default" in original:
        described["default"] = original["default"]
    properties[prop] = described
    return schema
