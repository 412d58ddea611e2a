"""``spec.matrix``: one Run spec expanded into named instances (pure).

Every axis of the matrix is a template variable of the spec: each instance is the spec
rendered again with the instance's values (and the caller's ``vars``), so the expansion
needs nothing but the template engine pyro already has. An instance is named
``NAME[axis=value,…]`` (axes in the order written); its Run spec has no matrix, and each
of its artifacts lands under ``<target>/<instance>/`` so instances never overwrite each
other's files. The bounds (:data:`pyro.spec.limits.MATRIX_INSTANCES`, and a cap on the
text rendered in all) hold against hostile specs before any instance is rendered.
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, ValidationError

from pyro.errors import SpecError, SpecIssue
from pyro.spec.model import Matrix, Model, RunSpec, axis_values

#: The most characters of spec text all instances together may render (instances times size).
MAX_EXPANDED_CHARS = 32 * 1024 * 1024

MatrixValues = dict[str, str | int]
Locate = Callable[[str], "tuple[int, int] | None"]


@dataclass(frozen=True)
class Instance:
    """One instance of a matrix: its name, its values, and its own Run spec."""

    name: str
    values: MatrixValues
    spec: RunSpec


class _MatrixBody(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    matrix: Matrix


class _MatrixDocument(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    spec: _MatrixBody


def raw_matrix(data: object) -> object | None:
    """The ``spec.matrix`` a Run document's data holds, unvalidated (None: it has none)."""
    if not isinstance(data, Mapping) or data.get("kind") != "Run":
        return None
    body = data.get("spec")
    if not isinstance(body, Mapping) or "matrix" not in body:
        return None
    matrix: object = body["matrix"]
    return matrix


def combinations(data: object, file: str, locate: Locate) -> list[MatrixValues]:
    """Every combination of a document's matrix, in order (the last axis varies fastest).

    Raises:
        SpecError: the matrix is invalid or expands to too many instances (nothing is
            expanded).
    """
    from pyro.spec.issues import issue_from_error

    try:
        document = _MatrixDocument.model_validate(data)
    except ValidationError as error:
        issues = [
            issue_from_error(detail, _MatrixDocument, file, locate) for detail in error.errors()
        ]
        raise SpecError(issues, MATRIX_HINT) from None
    matrix = document.spec.matrix
    names = list(matrix)
    values = [axis_values(axis) for axis in matrix.values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


MATRIX_HINT = (
    "a matrix maps axis names (template variables) to a list of values or {range: N}, "
    "e.g. matrix: {python: ['3.11', '3.12'], shard: {range: 4}}"
)


def check_expansion(
    combos: list[MatrixValues],
    vars: Mapping[str, object] | None,
    size: int,
    file: str,
    locate: Locate,
) -> None:
    """Refuse an axis also given as a variable, and an expansion past the text budget.

    Raises:
        SpecError: either.
    """
    axes = list(combos[0]) if combos else []
    clashes = [axis for axis in axes if vars is not None and axis in vars]
    if clashes:
        issues = [
            _issue(
                f"matrix axis {axis!r} is also given as a variable",
                f"/spec/matrix/{axis}",
                file,
                locate,
            )
            for axis in clashes
        ]
        raise SpecError(issues, "an axis takes each of its values in turn: drop the variable")
    if size * len(combos) > MAX_EXPANDED_CHARS:
        issue = _issue(
            f"the matrix renders a {size}-character spec {len(combos)} times, past the "
            f"budget of {MAX_EXPANDED_CHARS} characters",
            "/spec/matrix",
            file,
            locate,
        )
        raise SpecError([issue], "use fewer instances, or a smaller spec")


def _issue(message: str, pointer: str, file: str, locate: Locate) -> SpecIssue:
    line, column = locate(pointer) or (None, None)
    return SpecIssue(message, pointer=pointer, file=file, line=line, column=column)


def instance_name(name: str, values: MatrixValues) -> str:
    """``NAME[axis=value,…]``."""
    return f"{name}[{','.join(f'{axis}={value}' for axis, value in values.items())}]"


def instance(spec: RunSpec, values: MatrixValues) -> Instance:
    """The instance of ``spec`` (already rendered with ``values``): named, without its
    matrix, its artifacts under ``<target>/<instance>/``."""
    name = instance_name(spec.metadata.name, values)
    body = spec.spec
    artifacts = [a.model_copy(update={"target": _under(a.target, name)}) for a in body.artifacts]
    update: dict[str, Any] = {"matrix": None, "artifacts": artifacts}
    return Instance(
        name, dict(values), spec.model_copy(update={"spec": body.model_copy(update=update)})
    )


def model_instances(spec: RunSpec) -> tuple[Instance, ...]:
    """The instances of a spec given as a model (nothing to render: they differ by name)."""
    if spec.spec.matrix is None:
        return ()
    names = list(spec.spec.matrix)
    values = [axis_values(axis) for axis in spec.spec.matrix.values()]
    return tuple(
        instance(spec, dict(zip(names, combo, strict=True))) for combo in itertools.product(*values)
    )


def _under(target: str, name: str) -> str:
    if target.endswith("/"):
        return f"{target}{name}/"
    head, tail = posixpath.split(target)
    return posixpath.join(head, name, tail)
