"""How a tool declares itself where it is defined: one :func:`tool` decorator per tool method.

The decorator says how a client may treat the tool (its MCP annotations and title) and
which profiles offer it, and where in their lists. The tool's name is its method's name;
its description is the method's docstring; its parameters and its result are described by
the method's annotations. :mod:`pyro.mcp.server` builds the MCP tools from these
declarations alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.types import ToolAnnotations

from pyro.mcp.profiles import PROFILES

# Only hints that differ from the spec's defaults are set (readOnlyHint false,
# destructiveHint true, idempotentHint false, openWorldHint true): the same meaning in
# fewer bytes of every tools/list.
#: Reads local state only.
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
#: Reads, and may ask a registry over the network (``plan`` resolves digests).
READ_REGISTRY = ToolAnnotations(read_only_hint=True)
#: Deletes or stops something local.
DESTRUCTIVE = ToolAnnotations(open_world_hint=False)
#: Adds or changes local state only, never deletes (a rename, a snapshot).
CHANGES_LOCAL = ToolAnnotations(destructive_hint=False, open_world_hint=False)
#: Starts guests (whose commands may reach the network) or pulls from a registry.
RUNS = ToolAnnotations(destructive_hint=False)

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__pyro_tool__"


@dataclass(frozen=True)
class Declaration:
    """What :func:`tool` declared about one tool."""

    title: str
    annotations: ToolAnnotations
    #: profile -> the tool's place in that profile's list (1 = listed first).
    profiles: Mapping[str, int]


def tool(
    annotations: ToolAnnotations,
    *,
    title: str,
    profiles: Mapping[str, int],
    idempotent: bool = False,
) -> Callable[[F], F]:
    """Declare the decorated method a tool (see the module doc). ``idempotent``: calling
    it again with the same arguments changes nothing more (``idempotentHint``).

    Raises:
        ValueError: a profile that does not exist, a place below 1, or ``idempotent`` on
            a read-only tool (a bug in pyro, found when the tool module is imported).
    """
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown or not profiles or min(profiles.values()) < 1:
        raise ValueError(f"bad tool profiles {dict(profiles)} (profiles: {list(PROFILES)})")
    if idempotent and annotations.read_only_hint:
        raise ValueError("idempotentHint only means something for a tool that changes state")
    # The title goes on the tool itself (where clients look first), not again in here.
    hints = annotations.model_copy(update={"idempotent_hint": True if idempotent else None})
    declared = Declaration(title, hints, dict(profiles))

    def mark(method: F) -> F:
        setattr(method, _ATTRIBUTE, declared)
        return method

    return mark


def declaration(method: Callable[..., Any]) -> Declaration | None:
    """What ``method`` declared with :func:`tool`; None for a method that is no tool."""
    found = getattr(method, _ATTRIBUTE, None)
    return found if isinstance(found, Declaration) else None
