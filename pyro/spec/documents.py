"""Parsed spec documents and where their values were written: the YAML-free half of
:mod:`pyro.spec.yaml`, so validating a spec given as data never imports the YAML parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyro.errors import SpecIssue

Position = tuple[int, int]
"""1-based (line, column)."""


class Slot:
    """One node of a :class:`Positions` tree: where it was written, and its children."""

    __slots__ = ("children", "position")

    def __init__(self, position: Position | None) -> None:
        self.position = position
        self.children: dict[str, Slot] = {}


class Positions:
    """Where each JSON pointer of a document was written, kept as a tree of reference tokens.

    A flat ``{pointer: position}`` map holds every ancestor's keys again in each pointer: a
    document with long (aliased) keys nested deep makes it grow with the square of its size.
    The tree stores each token once, so its memory grows with the node count only; pointer
    strings are split when looked up, never built.
    """

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root = Slot(None)

    def root(self, position: Position) -> Slot:
        """The slot of pointer ``""``, set to ``position`` unless it already has one."""
        if self._root.position is None:
            self._root.position = position
        return self._root

    @staticmethod
    def child(slot: Slot, token: str, position: Position) -> Slot:
        """The child ``token`` (unescaped) of ``slot``; the first position written wins."""
        found = slot.children.get(token)
        if found is None:
            found = slot.children[token] = Slot(position)
        return found

    def _walk(self, pointer: str) -> tuple[Slot | None, Position | None]:
        """The slot of ``pointer`` (None if absent) and the deepest position on its way."""
        slot: Slot | None = self._root
        nearest = self._root.position
        if pointer:
            for token in pointer.split("/")[1:]:
                assert slot is not None
                slot = slot.children.get(token.replace("~1", "/").replace("~0", "~"))
                if slot is None:
                    break
                nearest = slot.position or nearest
        return slot, nearest

    def get(self, pointer: str, default: Position | None = None) -> Position | None:
        slot, _ = self._walk(pointer)
        if slot is None or slot.position is None:
            return default
        return slot.position

    def nearest(self, pointer: str) -> Position | None:
        """The position of ``pointer``, or of its nearest ancestor that was written."""
        return self._walk(pointer)[1]

    def __getitem__(self, pointer: str) -> Position:
        found = self.get(pointer)
        if found is None:
            raise KeyError(pointer)
        return found

    def __contains__(self, pointer: object) -> bool:
        return isinstance(pointer, str) and self.get(pointer) is not None


@dataclass
class YamlDocument:
    """One parsed YAML document: its data, and where each JSON pointer was written."""

    data: Any
    index: int
    start: Position
    positions: Positions = field(default_factory=Positions)

    def locate(self, pointer: str) -> Position:
        """Position of ``pointer``, or of its nearest ancestor written in the document."""
        return self.positions.nearest(pointer) or self.start


class YamlProblem(Exception):
    """Raised for a problem in the YAML text; carries the issues found.

    ``documents`` holds the documents that did parse cleanly, so their validation issues
    can be reported together with the YAML issues of the others.
    """

    def __init__(self, issues: list[SpecIssue], documents: list[YamlDocument] | None = None):
        super().__init__(issues[0].message if issues else "invalid YAML")
        self.issues = issues
        self.documents = documents or []


def escape_pointer(token: object) -> str:
    """Escape one JSON-pointer reference token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")
