"""pydantic's JSON Schema rewritten as draft-07, the dialect editors implement.

yaml-language-server (behind VS Code's, Neovim's and Helix's YAML support) implements
draft-07: it knows ``definitions``, not 2020-12's ``$defs``, and in draft-07 every keyword
next to a ``$ref`` is ignored, so a property's description and default beside its ``$ref``
would be lost. pydantic writes both; this module moves the definitions and wraps such a
``$ref`` in ``allOf``. A keyword draft-07 lacks (``prefixItems``, ``unevaluated*``, ...) is
refused rather than passed on, so a model that needs one fails ``make schemas`` loudly.
"""

from __future__ import annotations

from typing import Any

DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_DEFS_PREFIX = "#/$defs/"
_DEFINITIONS_PREFIX = "#/definitions/"
# Keywords whose values are schemas keyed by name (recursed per value).
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# Keywords whose values are data, never schemas: copied as they are.
_DATA = frozenset({"default", "examples", "const", "enum", "required"})
_NOT_IN_DRAFT_07 = frozenset(
    {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$vocabulary",
    }
)


def to_draft07(schema: dict[str, Any]) -> dict[str, Any]:
    """A draft-07 copy of ``schema`` (pydantic output); ``$schema`` set to draft-07.

    Raises:
        ValueError: the schema uses a keyword draft-07 does not have.
    """
    converted: dict[str, Any] = _convert(schema, "#")
    definitions = converted.pop("$defs", None)
    if definitions:
        converted["definitions"] = definitions
    converted["$schema"] = DRAFT_07
    return converted


def _convert(node: Any, where: str) -> Any:
    if isinstance(node, list):
        return [_convert(item, f"{where}/{index}") for index, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOT_IN_DRAFT_07:
            raise ValueError(f"{where}: draft-07 has no {key!r}; express it another way")
        if key in _DATA:
            result[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            result[key] = {
                name: _convert(item, f"{where}/{key}/{name}") for name, item in value.items()
            }
        elif key == "$ref" and isinstance(value, str):
            internal = value.startswith(_DEFS_PREFIX)
            result[key] = (
                _DEFINITIONS_PREFIX + value.removeprefix(_DEFS_PREFIX) if internal else value
            )
        else:
            result[key] = _convert(value, f"{where}/{key}")
    if "$ref" in result and len(result) > 1:
        reference = {"$ref": result.pop("$ref")}
        result["allOf"] = [reference, *result.get("allOf", [])]
    return result
