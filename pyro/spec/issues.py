"""Turn pydantic validation errors into located, readable :class:`SpecIssue` values (pure)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pyro.errors import SpecIssue
from pyro.spec.documents import Position, escape_pointer

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

Locate = Callable[[str], Position | None]

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
    "none_required": "null",
}

_BOUNDS = {
    "greater_than_equal": ("≥", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("≤", "le"),
    "less_than": ("<", "lt"),
}


def describe_value(value: object, limit: int = 60) -> str:
    """A short description of a YAML value for 'found ...' texts."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated/list/dict annotations."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _child_annotation(annotation: Any, token: str | int) -> Any:
    """The annotation of ``token`` inside a value of type ``annotation``, or None."""
    for candidate in _unwrap(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            for name, info in candidate.model_fields.items():
                if token in (info.alias, name):
                    return info.annotation
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is list and isinstance(token, int) and args:
            return args[0]
        if origin is dict and isinstance(token, str) and len(args) == 2:
            return args[1]
    return None


def annotation_at(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The annotation of the value at ``loc`` (a pydantic error location) in ``model``."""
    annotation: Any = model
    for token in loc:
        if annotation is None:
            return None
        annotation = _child_annotation(annotation, token)
    return annotation


def allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys a mapping at ``loc`` may hold (aliases, as written in YAML)."""
    for candidate in _unwrap(annotation_at(model, loc)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return [info.alias or name for name, info in candidate.model_fields.items()]
    return []


def _enum_values(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    for candidate in _unwrap(annotation_at(model, loc)):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [str(member.value) for member in candidate]
        if typing.get_origin(candidate) is typing.Literal:
            return [str(arg) for arg in typing.get_args(candidate)]
    return []


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """``"; did you mean 'X'?"`` for the choice closest to ``word``, or ``""`` if none is close.

    Case is ignored when comparing (``memorymib`` finds ``memoryMiB``); difflib's ratio must
    reach 0.6, so ``timeout`` finds ``timeoutSeconds`` but ``x`` finds nothing.
    """
    if not isinstance(word, str) or not choices:
        return ""
    import difflib  # only when something is wrong

    by_folded = {choice.casefold(): choice for choice in choices}
    close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=0.6)
    if not close or by_folded[close[0]] == word:
        return ""
    return f"; did you mean {by_folded[close[0]]!r}?"


def pointer_of(loc: Sequence[str | int]) -> str:
    return "".join(f"/{escape_pointer(token)}" for token in loc)


def issue_from_error(
    error: ErrorDetails, model: type[BaseModel], file: str, locate: Locate
) -> SpecIssue:
    """One SpecIssue for one pydantic error, located via ``locate(pointer)``."""
    loc = [token for token in error["loc"] if token != "[key]"]
    is_key = "[key]" in error["loc"]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    found_value = error.get("input")
    pointer = pointer_of(loc)
    expected: str | None = None
    found: str | None = describe_value(found_value)
    message = error["msg"]

    if kind == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        message = f"unknown key {loc[-1]!r}" + did_you_mean(loc[-1], allowed)
        expected = "one of the keys " + ", ".join(allowed) if allowed else None
        found = None
    elif kind == "missing":
        message = f"missing required key {loc[-1]!r}"
        found = None
    elif kind in _TYPE_NAMES:
        message = "wrong type"
        expected = _TYPE_NAMES[kind]
    elif kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        message = "value out of range"
        expected = f"an integer {symbol} {ctx.get(key)}"
    elif kind in ("enum", "literal_error"):
        values = _enum_values(model, loc) or [str(ctx.get("expected", ""))]
        message = "value not allowed" + did_you_mean(found_value, values)
        expected = "one of " + ", ".join(values)
    elif kind == "string_pattern_mismatch":
        message = "invalid key" if is_key else "invalid value"
        expected = f"a string matching {ctx.get('pattern')}"
    elif kind in ("string_too_short", "string_too_long"):
        message = "string too short" if kind == "string_too_short" else "string too long"
        bound = ctx.get("min_length", ctx.get("max_length"))
        expected = f"at {'least' if kind == 'string_too_short' else 'most'} {bound} characters"
        found = f"{len(found_value)} characters" if isinstance(found_value, str) else found
    elif kind in ("too_short", "too_long"):
        message = "too few items" if kind == "too_short" else "too many items"
        bound = ctx.get("min_length", ctx.get("max_length"))
        expected = f"at {'least' if kind == 'too_short' else 'most'} {bound} item(s)"
        found = f"{ctx.get('actual_length')} item(s)"
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", message))
        field = loc[-1] if loc else None
        if isinstance(field, str) and isinstance(found_value, str | int):
            message = f"{field} {message}" if _reads_as_predicate(message) else message
        if isinstance(found_value, dict | list):
            found = None
    if is_key and kind != "extra_forbidden":
        message = f"{message} {found_value!r}"
        found = None
    duplicate = _duplicate_name(found_value) if "used twice" in message else None
    if duplicate is not None:
        # Point at the second use, not at the whole list.
        loc = [*loc, duplicate, "name"]
        pointer = pointer_of(loc)
        found = None

    line, column = locate(pointer) or (None, None)
    return SpecIssue(
        message,
        pointer=pointer,
        file=file,
        line=line,
        column=column,
        expected=expected,
        found=found,
    )


def _reads_as_predicate(message: str) -> bool:
    """Validator messages like "must be ..." read better with the field name in front."""
    return message.startswith(("must ", "is ", "uses ", "has "))


def _duplicate_name(items: object) -> int | None:
    """Index of the first item whose 'name' was used by an earlier item."""
    if not isinstance(items, list):
        return None
    seen: set[object] = set()
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
        if name in seen:
            return index
        seen.add(name)
    return None
