"""YAML parsing for specs: safe, YAML 1.2-style scalars, with source locations (pure).

PyYAML implements YAML 1.1, where ``off``/``no``/``yes`` are booleans, ``0755`` is octal,
``1:20`` is 80 and ``2024-01-01`` is a date. Spec authors write ``policy: off`` and mean the
string, so the resolver here follows the YAML 1.2 core schema instead: only ``true``/``false``
are booleans, and integers and floats use the 1.2 forms. Timestamps stay strings.

While the node tree is composed, every node's position is recorded under its JSON pointer,
so validation errors can name the line and column a user wrote.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyro.errors import SpecIssue
from pyro.spec.documents import (
    Position,
    Positions,
    Slot,
    YamlDocument,
    YamlProblem,
    escape_pointer,
)

# PyYAML's Reader compiles the class of every printable character (NON_PRINTABLE, negated)
# when yaml is imported, and Python's regular expression compiler spends more on that one
# class than on the rest of PyYAML's import (docs/performance.md). The same set written as
# its complement compiles in a fraction of the time, and ``re`` caches compiled patterns
# by their text: put the complement under the original's text, and yaml's import finds it
# compiled. Only a cache entry: where ``re`` keeps no such cache, yaml compiles its own.
YAML_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
NON_PRINTABLE = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"


def _precompile_yaml_reader() -> None:
    cache = getattr(re, "_cache", None)
    if "yaml" not in sys.modules and isinstance(cache, dict):
        cache.setdefault((str, YAML_NON_PRINTABLE, 0), re.compile(NON_PRINTABLE))


_precompile_yaml_reader()

import yaml  # noqa: E402  (after _precompile_yaml_reader)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode  # noqa: E402

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENTS",
    "MAX_EXPANDED_CHARS",
    "MAX_KEY_CHARS",
    "MAX_NODES",
    "Position",
    "SpecLoader",
    "YamlDocument",
    "YamlProblem",
    "escape_pointer",
    "parse_documents",
]

# Bounds on one file, counted with aliases expanded (as validation and planning will see the
# data). They guard against "billion laughs" documents, which expand a few anchors into
# billions of nodes, and against long aliased keys nested deep, which made every JSON pointer
# repeat them. A spec file is at most 1 MiB, so real specs stay far below each bound.
MAX_DOCUMENTS = 1000
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_KEY_CHARS = 1024
MAX_EXPANDED_CHARS = 16 * 1024 * 1024
# Duplicate-key issues listed per document; the rest are counted.
MAX_ISSUES = 100
# A pointer named in a bound's error is shortened to this many characters.
MAX_SHOWN_POINTER = 200

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")


class SpecLoader(yaml.SafeLoader):
    """A SafeLoader with YAML 1.2 core-schema scalars."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # Explicit tags ("!!int abc", "!!timestamp 2020-13-45") fail with plain ValueErrors;
        # give them the node's position like every other YAML error.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as error:
            if isinstance(error, yaml.YAMLError):
                raise
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read value: {error}", node.start_mark
            ) from error

    def construct_yaml_bool(self, node: Node) -> bool:
        return str(self.construct_scalar(node)).lower() == "true"  # type: ignore[arg-type]

    def construct_yaml_int(self, node: Node) -> int:
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith(("0o", "0x")):
            return sign * int(digits, 0)
        return sign * int(digits, 10)


def _add(tag: str, pattern: re.Pattern[str], first: str) -> None:
    SpecLoader.add_implicit_resolver(tag, pattern, list(first) if first else None)


_add(_BOOL_TAG, _BOOL_RE, "tTfF")
_add(_INT_TAG, _INT_RE, "-+0123456789")
_add(_FLOAT_TAG, _FLOAT_RE, "-+0123456789.")
_add(_NULL_TAG, _NULL_RE, "~nN")
SpecLoader.add_implicit_resolver(_NULL_TAG, _NULL_RE, [""])
SpecLoader.add_implicit_resolver(_MERGE_TAG, re.compile(r"^(?:<<)$"), ["<"])
SpecLoader.add_constructor(_BOOL_TAG, SpecLoader.construct_yaml_bool)
SpecLoader.add_constructor(_INT_TAG, SpecLoader.construct_yaml_int)


def _pos(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass
class _Totals:
    """What the documents of one file have used of the bounds so far."""

    count: int = 0
    chars: int = 0
    exhausted: bool = False


@dataclass
class _Walk:
    """Records positions and finds duplicate keys, counting what aliases expand to.

    The walk visits the tree as the data will be seen (every alias expanded), so its counts
    bound what validation and planning will later go through. It never builds a JSON pointer
    unless it reports an issue: positions go into a tree of tokens (see :class:`Positions`).
    """

    name: str
    positions: Positions
    totals: _Totals
    issues: list[SpecIssue] = field(default_factory=list)
    dropped: int = 0
    path: list[str] = field(default_factory=list)

    def visit(self, node: Node, slot: Slot, active: frozenset[int]) -> None:
        self.totals.count += 1
        if self.totals.count > MAX_NODES:
            message = f"brings the file to more than {MAX_NODES} values (too many aliases)"
            raise self._limit(node, message, file_wide=True)
        if id(node) in active:
            raise _Recursive(node)
        if isinstance(node, ScalarNode):
            self._add_chars(node, node.value)
            return
        if len(self.path) >= MAX_DEPTH:
            raise self._limit(node, f"nests deeper than {MAX_DEPTH} levels")
        active = active | {id(node)}
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                token = str(index)
                self.path.append(token)
                self.visit(item, Positions.child(slot, token, _pos(item)), active)
                self.path.pop()
        elif isinstance(node, MappingNode):
            self._visit_mapping(node, slot, active)

    def _add_chars(self, node: Node, text: str) -> None:
        self.totals.chars += len(text)
        if self.totals.chars > MAX_EXPANDED_CHARS:
            raise self._limit(
                node,
                f"brings the file to more than {MAX_EXPANDED_CHARS} characters of text "
                "(too many aliases)",
                file_wide=True,
            )

    def _visit_mapping(self, node: MappingNode, slot: Slot, active: frozenset[int]) -> None:
        seen: dict[str, Position] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                # Merged keys come from an anchor elsewhere; locate them at the anchor.
                self.visit(value, slot, active)
                continue
            if not isinstance(key, ScalarNode):
                self._report(key, None, "a mapping key must be a scalar")
                continue
            if len(key.value) > MAX_KEY_CHARS:
                raise self._limit(key, f"has a mapping key longer than {MAX_KEY_CHARS} characters")
            self._add_chars(key, key.value)
            if key.value in seen:
                line, column = seen[key.value]
                message = f"duplicate key {key.value!r} (first written at line {line}:{column})"
                self._report(key, key.value, message)
            else:
                seen[key.value] = _pos(key)
            child = Positions.child(slot, key.value, _pos(key))
            self.path.append(key.value)
            self.visit(value, child, active)
            self.path.pop()

    def _limit(self, node: Node, problem: str, *, file_wide: bool = False) -> _Limit:
        pointer = "".join(f"/{escape_pointer(part)}" for part in self.path)
        if len(pointer) > MAX_SHOWN_POINTER:
            pointer = pointer[: MAX_SHOWN_POINTER // 2] + "…" + pointer[-MAX_SHOWN_POINTER // 2 :]
        return _Limit(node, problem, pointer, file_wide)

    def _report(self, node: Node, token: str | None, message: str) -> None:
        if len(self.issues) >= MAX_ISSUES:
            self.dropped += 1
            return
        tokens = self.path if token is None else [*self.path, token]
        pointer = "".join(f"/{escape_pointer(part)}" for part in tokens)
        line, column = _pos(node)
        self.issues.append(
            SpecIssue(message, pointer=pointer, file=self.name, line=line, column=column)
        )


class _Limit(Exception):
    def __init__(self, node: Node, problem: str, pointer: str, file_wide: bool) -> None:
        self.node = node
        self.problem = problem
        self.pointer = pointer
        self.file_wide = file_wide


class _Recursive(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _node_issue(name: str, node: Node, message: str, hint_pointer: str = "") -> SpecIssue:
    line, column = _pos(node)
    return SpecIssue(message, pointer=hint_pointer, file=name, line=line, column=column)


def _mark_issue(name: str, error: yaml.MarkedYAMLError) -> SpecIssue:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or error.context or "invalid YAML"
    context = f" ({error.context})" if error.context and error.problem else ""
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    return SpecIssue(f"YAML syntax error: {problem}{context}", file=name, line=line, column=column)


def _documents(text: str, name: str) -> Iterator[tuple[Node, SpecLoader]]:
    loader = SpecLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() guarantees a node
                break
            yield node, loader
    finally:
        loader.dispose()


def parse_documents(text: str, name: str) -> list[YamlDocument]:
    """Parse every document of ``text``; each must be a mapping.

    Raises:
        YamlProblem: the text is not valid YAML, a document is empty, not a mapping, has
            duplicate keys or recursive aliases, or the file passes a bound (aliases
            expanded): more than MAX_DOCUMENTS documents, MAX_NODES values or
            MAX_EXPANDED_CHARS characters in all, MAX_DEPTH levels, or a key longer than
            MAX_KEY_CHARS.
    """
    documents: list[YamlDocument] = []
    issues: list[SpecIssue] = []
    totals = _Totals()
    try:
        for index, (node, loader) in enumerate(_documents(text, name)):
            if index >= MAX_DOCUMENTS:
                message = f"the file holds more than {MAX_DOCUMENTS} documents"
                issues.append(_node_issue(name, node, message))
                break
            document = _document(node, loader, index, name, issues, totals)
            if document is not None:
                documents.append(document)
            if totals.exhausted:
                break  # the bounds are for the whole file: later documents cannot fit
    except yaml.MarkedYAMLError as error:
        issues.append(_mark_issue(name, error))
    except yaml.YAMLError as error:
        issues.append(SpecIssue(f"YAML error: {error}", file=name))
    except (RecursionError, ValueError, OverflowError, TypeError) as error:
        # Deeply nested flow collections exhaust the recursion limit; explicit tags like
        # "!!int abc" or "!!timestamp 2020-13-45" fail in the constructors; int() refuses
        # numbers with too many digits. All are input problems, not bugs.
        issues.append(SpecIssue(f"YAML cannot be read: {error}", file=name))
    if not documents and not issues:
        issues.append(SpecIssue("the spec is empty (no YAML document found)", file=name))
    if issues:
        raise YamlProblem(issues, documents)
    return documents


def _document(
    node: Node,
    loader: SpecLoader,
    index: int,
    name: str,
    issues: list[SpecIssue],
    totals: _Totals,
) -> YamlDocument | None:
    label = f"document {index + 1}"
    if node.tag == _NULL_TAG and isinstance(node, ScalarNode):
        issues.append(_node_issue(name, node, f"{label} is empty"))
        return None
    if not isinstance(node, MappingNode):
        kind = "a list" if isinstance(node, SequenceNode) else "a single value"
        message = (
            f"{label} is {kind}; a spec must be a mapping with apiVersion, kind, metadata, spec"
        )
        issues.append(_node_issue(name, node, message))
        return None
    positions = Positions()
    walk = _Walk(name, positions, totals)
    try:
        walk.visit(node, positions.root(_pos(node)), frozenset())
    except _Limit as error:
        totals.exhausted = error.file_wide
        issues.append(_node_issue(name, error.node, f"{label} {error.problem}", error.pointer))
        return None
    except _Recursive as error:
        issues.append(_node_issue(name, error.node, f"{label} has a recursive alias"))
        return None
    if walk.issues:
        issues.extend(walk.issues)
        if walk.dropped:
            message = f"{label}: {walk.dropped} more problems like these are not listed"
            issues.append(_node_issue(name, node, message))
        return None
    data = loader.construct_document(node)
    if not isinstance(data, dict):
        # A tagged mapping such as "!!set {a, b}" constructs to something else.
        message = f"{label} is a {type(data).__name__}; a spec must be a plain mapping"
        issues.append(_node_issue(name, node, message))
        return None
    return YamlDocument(data=data, index=index, start=_pos(node), positions=positions)
