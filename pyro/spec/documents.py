"""Parsed spec documents and where their values were written: the YAML-free half of
:mod:`pyro.spec.yaml`, so validating a spec given as data never imports the YAML parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyro.errors import SpecIssue

Position = tuple[int, int]
"""1-based (line, column)."""


@dataclass
class YamlDocument:
    """One parsed YAML document: its data, and where each JSON pointer was written."""

    data: Any
    index: int
    start: Position
    positions: dict[str, Position] = field(default_factory=dict)

    def locate(self, pointer: str) -> Position:
        """Position of ``pointer``, or of its nearest ancestor written in the document."""
        while pointer:
            if pointer in self.positions:
                return self.positions[pointer]
            pointer = pointer.rsplit("/", 1)[0]
        return self.positions.get("", self.start)


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
