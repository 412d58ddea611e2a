"""The tool schemas a client sees, sized for a model's context window.

pydantic derives a tool's schemas from its Python types; as they are, nested models and
the spec documents make ``tools/list`` tens of kilobytes, which every conversation pays
for. So the server publishes a brief form:

* an input schema without pydantic's ``title`` keys, an optional argument as its type
  alone (a ``spec`` argument is a plain object whose description names the resource
  with its JSON Schema);
* an output schema that keeps the result's own fields, each with its type and plain
  words (:mod:`pyro.mcp.glossary`), and describes nested objects in words instead of
  repeating their schemas. It only loosens the full schema (no ``required`` list
  either), so every real result still validates against it; the full schemas are
  resources (:mod:`pyro.mcp.resources`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyro.mcp.glossary import words_for

_PLAIN = ("string", "integer", "number", "boolean")
#: The resource a ``spec`` argument's description names (:mod:`pyro.mcp.resources`).
RUN_SCHEMA_URI = "pyro://schemas/run"


def plain_words(text: str) -> str:
    """``text`` without reStructuredText markup: double backticks become single ones."""
    return text.replace("``", "`")


def brief_input(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The input schema without ``title`` keys (the property names say it), an optional
    argument as its type alone: a caller leaves it out rather than sending null."""
    brief: dict[str, Any] = _without_titles(schema)
    for name, prop in brief.get("properties", {}).items():
        choices = prop.get("anyOf")
        if prop.get("default", ...) is None and choices and {"type": "null"} in choices:
            rest = [choice for choice in choices if choice != {"type": "null"}]
            kept = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
            one = rest[0] if len(rest) == 1 else {"anyOf": rest}
            brief["properties"][name] = prop = {**one, **kept}
        if prop.get("additionalProperties") is True:  # JSON Schema's default anyway
            brief["properties"][name] = {
                k: v for k, v in prop.items() if k != "additionalProperties"
            }
    return brief


def brief_output(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The result's own fields, each typed and described; nested objects in words.

    Raises:
        ValueError: a field has no description in the model or the glossary (a bug in
            pyro, caught when the server is built).
    """
    defs: Mapping[str, Any] = schema.get("$defs", {})
    model = str(schema.get("title", ""))
    properties: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        words = words_for(model, name) or prop.get("description")
        if not words:
            raise ValueError(f"output field {model}.{name} has no description")
        properties[name] = {**_shape(prop, defs), "description": plain_words(words)}
    return {"type": "object", "properties": properties}


def _shape(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON type(s) of one property, without nested object schemas."""
    prop = _resolve(prop, defs)
    choices = prop.get("anyOf") or prop.get("oneOf")
    if choices:
        types: list[str] = []
        for choice in choices:
            for found in _types(_shape(choice, defs)):
                if found not in types:
                    types.append(found)
        return {"type": types[0] if len(types) == 1 else types}
    shape: dict[str, Any] = {"type": prop.get("type", "object")}
    if "const" in prop:
        shape["enum"] = [prop["const"]]
    elif "enum" in prop:
        shape["enum"] = list(prop["enum"])
    if shape["type"] == "array":
        items = _shape(prop.get("items", {}), defs)
        if items["type"] in _PLAIN:
            shape["items"] = items
    return shape


def _types(shape: Mapping[str, Any]) -> list[str]:
    found = shape["type"]
    return list(found) if isinstance(found, list) else [found]


def _resolve(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(defs[ref.removeprefix("#/$defs/")])
    return prop


def _without_titles(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {
            key: _without_titles(value)
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_without_titles(value) for value in node]
    return node
