"""How a tool declares itself where it is defined: one :func:`tool` decorator per tool method.

The decorator says how a client may treat the tool (its MCP annotations), which profiles
offer it and where in their lists, and which parameter (if any) takes a whole spec
document. The tool's name is its method's name; its description is the method's docstring;
its other parameters and its result are described by the method's annotations.
:mod:`pyro.mcp.server` builds the MCP tools from these declarations alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.types import ToolAnnotations

from pyro.mcp.profiles import PROFILES

#: Reads only. All pyro tools act on local VMs only, except that a guest command may reach
#: the network when asked to.
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
#: Deletes or stops something.
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)
#: Starts guests (whose commands may reach the network).
RUNS = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__pyro_tool__"


@dataclass(frozen=True)
class SpecParameter:
    """A parameter that takes a whole spec document: its schema is replaced by the spec
    models' own (:func:`pyro.mcp.schema.embed_spec_schema`)."""

    name: str
    #: Spec models the schema allows ("RunSpec", "EnvironmentSpec").
    models: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Declaration:
    """What :func:`tool` declared about one tool."""

    annotations: ToolAnnotations
    #: profile -> the tool's place in that profile's list (1 = listed first).
    profiles: Mapping[str, int]
    spec: SpecParameter | None = None


def tool(
    annotations: ToolAnnotations,
    *,
    profiles: Mapping[str, int],
    spec: SpecParameter | None = None,
) -> Callable[[F], F]:
    """Declare the decorated method a tool (see the module doc).

    Raises:
        ValueError: a profile that does not exist, or a place below 1 (a bug in pyro,
            found when the tool module is imported).
    """
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown or not profiles or min(profiles.values()) < 1:
        raise ValueError(f"bad tool profiles {dict(profiles)} (profiles: {list(PROFILES)})")
    declared = Declaration(annotations, dict(profiles), spec)

    def mark(method: F) -> F:
        setattr(method, _ATTRIBUTE, declared)
        return method

    return mark


def declaration(method: Callable[..., Any]) -> Declaration | None:
    """What ``method`` declared with :func:`tool`; None for a method that is no tool."""
    found = getattr(method, _ATTRIBUTE, None)
    return found if isinstance(found, Declaration) else None
