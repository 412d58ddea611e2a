"""The one spec loader: file/text/dict → rendered → parsed → validated spec models (pure).

Every front end (CLI, SDK, MCP) calls these functions; nothing else in pyro parses YAML.
The only effect is reading the spec file itself.

Order of work for text: input checks (size, binary, UTF-8, empty) → Jinja2 rendering (only
when the text holds ``{{``/``{%``) → YAML parsing with positions → per-document validation.
All issues of all documents are collected and raised together in one :class:`SpecError`.

Dict input (SDK/MCP payloads) is already structured data: its string values are rendered
as templates only when ``vars`` is given (``None`` means "no templating"), so literal
``{{`` in a command stays literal unless the caller asked for templating.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pyro.errors import SpecError, SpecIssue
from pyro.spec.documents import YamlDocument, YamlProblem, escape_pointer
from pyro.spec.model import API_VERSION, RunSpec

if TYPE_CHECKING:
    from pyro.spec.environment import EnvironmentSpec
    from pyro.spec.matrix import Instance, MatrixValues
from pyro.spec.template import has_template, render_budget, render_template, template_line_map
from pyro.spec.undefined import Rendered, render_collecting, undefined_error

__all__ = [
    "MAX_SPEC_BYTES",
    "LoadedSpec",
    "load_spec",
    "load_spec_data",
    "load_spec_documents",
    "load_spec_text",
    "load_vars_file",
    "render_template",
]

MAX_SPEC_BYTES = 1024 * 1024
#: The document kinds, as ``kind:`` names them (their models: ``pyro.spec.environment.KINDS``).
KIND_NAMES = ("Run", "Environment")
DEFAULT_NAME = "<spec>"


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec document and where it came from."""

    spec: RunSpec | EnvironmentSpec
    path: Path | None
    """The file it came from (None for dict/text input)."""
    base_dir: Path
    """The folder relative host paths resolve against: the spec's folder, or the cwd."""
    index: int
    """Document index within the file (0-based)."""
    source_name: str
    """What error messages call it: the path as given, or "<spec>"."""
    instances: tuple[Instance, ...] = ()
    """A Run document with a ``matrix``: its instances, each rendered with its own values
    (``spec`` is then the first instance's rendering, matrix included); else empty."""


def load_spec_documents(
    path: str | os.PathLike[str], *, vars: Mapping[str, object] | None = None
) -> list[LoadedSpec]:
    """Load every document of a spec file.

    Raises:
        SpecError: the file cannot be read, is empty, binary, not UTF-8, larger than 1 MiB,
            fails to render or parse, or any document is invalid (all issues together).
    """
    name = os.fspath(path)
    text = _read(Path(name), name)
    resolved = Path(name).resolve()
    return _load_text(text, name=name, base_dir=resolved.parent, path=resolved, vars=vars)


def load_spec_text(
    text: str,
    *,
    name: str = DEFAULT_NAME,
    base_dir: Path | None = None,
    vars: Mapping[str, object] | None = None,
) -> list[LoadedSpec]:
    """Load every document of spec text (e.g. read from stdin).

    Raises:
        SpecError: the text is empty, too large, fails to render or parse, or any document
            is invalid.
    """
    _check_text(text, name)
    return _load_text(text, name=name, base_dir=base_dir or Path.cwd(), path=None, vars=vars)


def load_spec_data(
    data: Mapping[str, object],
    *,
    name: str = DEFAULT_NAME,
    base_dir: Path | None = None,
    vars: Mapping[str, object] | None = None,
) -> LoadedSpec:
    """Validate one spec given as data (the YAML document as JSON-like Python values).

    String values are rendered as templates only when ``vars`` is given, and always for
    a Run with a ``matrix`` (its axes are variables).

    Raises:
        SpecError: the data is not a mapping, a template fails, or the spec is invalid.
    """
    if not isinstance(data, Mapping):
        found = type(data).__name__
        issue = SpecIssue("a spec must be a mapping", file=name, expected="a mapping", found=found)
        raise SpecError([issue])
    from pyro.spec.matrix import raw_matrix

    if raw_matrix(data) is not None:
        return _load_matrix_data(data, name=name, base_dir=base_dir, vars=vars)
    return _load_plain_data(data, name=name, base_dir=base_dir, vars=vars)


def _load_plain_data(
    data: Mapping[str, object],
    *,
    name: str,
    base_dir: Path | None,
    vars: Mapping[str, object] | None,
) -> LoadedSpec:
    undefined: list[SpecIssue] = []
    if vars is not None:
        with render_budget():  # one budget for all strings of the spec, not one per string
            rendered = _render_data(dict(data), vars, name, "", undefined)
    else:
        rendered = dict(data)
    document = YamlDocument(data=rendered, index=0, start=(1, 1))
    spec, issues = _validate(document, name, locate=False)
    if undefined:
        # A string using an undefined variable holds a placeholder: its own problems are
        # consequences of the missing value.
        pointers = {issue.pointer for issue in undefined}
        raise undefined_error(undefined + [i for i in issues if i.pointer not in pointers])
    if spec is None:
        raise SpecError(issues)
    return LoadedSpec(spec, None, base_dir or Path.cwd(), 0, name)


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, object] | RunSpec | EnvironmentSpec,
    *,
    vars: Mapping[str, object] | None = None,
    base_dir: Path | None = None,
) -> LoadedSpec:
    """Load one spec from a file path, a mapping, or an already-built model.

    A file must hold exactly one document; use :func:`load_spec_documents` for several.
    Relative host paths of a mapping or model resolve against ``base_dir`` (default: the
    working directory); a file's, against its own folder.

    Raises:
        SpecError: the spec cannot be read or is invalid, or the file holds several documents.
    """
    if isinstance(source, RunSpec):
        instances: tuple[Instance, ...] = ()
        if source.spec.matrix is not None:
            from pyro.spec.matrix import model_instances

            instances = model_instances(source)
        return LoadedSpec(source, None, base_dir or Path.cwd(), 0, DEFAULT_NAME, instances)
    if isinstance(source, Mapping):
        return load_spec_data(source, vars=vars, base_dir=base_dir)
    if not isinstance(source, str | os.PathLike):
        from pyro.spec.environment import EnvironmentSpec

        if isinstance(source, EnvironmentSpec):
            return LoadedSpec(source, None, base_dir or Path.cwd(), 0, DEFAULT_NAME)
        issue = SpecIssue(
            "a spec must be a file path, a mapping or a spec model",
            found=type(source).__name__,
        )
        raise SpecError([issue])
    documents = load_spec_documents(source, vars=vars)
    if len(documents) != 1:
        name = os.fspath(source)
        issue = SpecIssue(
            f"the file holds {len(documents)} documents; expected exactly one", file=name
        )
        raise SpecError([issue], "use load_spec_documents() to load a multi-document file")
    return documents[0]


def load_vars_file(path: str | os.PathLike[str]) -> dict[str, object]:
    """Read a ``--vars-file``: one YAML (or JSON) mapping of NAME: value, parsed like specs.

    Raises:
        SpecError: the file cannot be read, is not YAML, holds more than one document, or
            is not a mapping with string keys.
    """
    from pyro.spec.yaml import parse_documents

    name = os.fspath(path)
    text = _read(Path(name), name)
    try:
        documents = parse_documents(text, name)
    except YamlProblem as problem:
        raise SpecError(problem.issues, _VARS_HINT) from None
    if len(documents) != 1:
        issue = SpecIssue(f"a vars file holds one mapping; found {len(documents)}", file=name)
        raise SpecError([issue], _VARS_HINT)
    data = documents[0].data
    bad = [key for key in data if not isinstance(key, str)]
    if bad:
        line, column = documents[0].start
        issue = SpecIssue(
            f"vars names must be strings; found {bad[0]!r}", file=name, line=line, column=column
        )
        raise SpecError([issue], _VARS_HINT)
    return dict(data)


_VARS_HINT = "a vars file is a YAML or JSON mapping of NAME: value"


def _read(path: Path, name: str) -> str:
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError as error:
        raise _file_error(name, "no such file", "check the path") from error
    except IsADirectoryError as error:
        raise _file_error(name, "is a folder, not a spec file", "name a .yaml file") from error
    except ValueError as error:  # a NUL byte in the path (SDK/MCP callers can pass one)
        raise _file_error(name, "is not a valid path (NUL byte)", "check the path") from error
    except OSError as error:
        reason = error.strerror or str(error)
        raise _file_error(name, f"cannot be read: {reason}", "check permissions") from error
    if len(raw) > MAX_SPEC_BYTES:
        raise _file_error(name, f"is larger than {MAX_SPEC_BYTES} bytes", "specs must be ≤ 1 MiB")
    if b"\x00" in raw:
        raise _file_error(name, "is a binary file (contains NUL bytes)", "name a YAML text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        issue = SpecIssue(f"is not valid UTF-8 (byte {error.start})", file=name, line=line)
        raise SpecError([issue], "save the spec as UTF-8 text") from error
    _check_text(text, name)
    return text


def _check_text(text: str, name: str) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise _file_error(name, f"is larger than {MAX_SPEC_BYTES} bytes", "specs must be ≤ 1 MiB")
    if "\x00" in text:
        raise _file_error(name, "contains NUL characters", "specs are YAML text")
    if not text.strip():
        raise _file_error(name, "is empty", "write a spec with apiVersion, kind, metadata, spec")


def _file_error(name: str, problem: str, hint: str) -> SpecError:
    return SpecError([SpecIssue(f"spec file {problem}", file=name)], hint)


def _load_text(
    text: str,
    *,
    name: str,
    base_dir: Path,
    path: Path | None,
    vars: Mapping[str, object] | None,
) -> list[LoadedSpec]:
    if "matrix" in text:  # cheap: only a text that says so can hold one
        expanded = _load_matrix_text(text, name=name, base_dir=base_dir, path=path, vars=vars)
        if expanded is not None:
            return expanded
    return _load_plain_text(text, name=name, base_dir=base_dir, path=path, vars=vars)


def _load_matrix_text(
    text: str,
    *,
    name: str,
    base_dir: Path,
    path: Path | None,
    vars: Mapping[str, object] | None,
) -> list[LoadedSpec] | None:
    """The documents of a text whose Run document has a matrix, that document with its
    instances (each the whole text rendered again with its values); None when no
    document has one (or the text cannot even be read that far: the plain load says why).

    Raises:
        SpecError: the matrix is invalid, too large, clashes with ``vars``, or an
            instance is invalid (its name is in the hint).
    """
    from pyro.spec.matrix import check_expansion, combinations, instance, raw_matrix
    from pyro.spec.yaml import parse_documents

    try:
        first = render_collecting(text, vars, name)
        documents = parse_documents(first.text, name)
    except (SpecError, YamlProblem):
        return None
    found = [document for document in documents if raw_matrix(document.data) is not None]
    if not found:
        return None
    if len(found) > 1:
        line, column = found[1].locate("/spec/matrix")
        issue = SpecIssue(
            "only one Run document of a file may have a matrix",
            pointer="/spec/matrix",
            file=name,
            line=line,
            column=column,
        )
        raise SpecError([issue], "put each matrix Run in a file of its own")
    document = found[0]
    combos = combinations(document.data, name, document.locate)
    check_expansion(combos, vars, len(text), name, document.locate)
    loaded: list[LoadedSpec] = []
    instances = []
    for values in combos:
        try:
            rendered = _load_plain_text(
                text, name=name, base_dir=base_dir, path=path, vars={**(vars or {}), **values}
            )
        except SpecError as error:
            raise _in_instance(error, document.data, values) from None
        spec = next(doc.spec for doc in rendered if doc.index == document.index)
        assert isinstance(spec, RunSpec)
        instances.append(instance(spec, values))
        loaded = loaded or rendered
    return [
        replace(doc, instances=tuple(instances)) if doc.index == document.index else doc
        for doc in loaded
    ]


def _in_instance(error: SpecError, data: Any, values: MatrixValues) -> SpecError:
    """``error`` of one instance, its hint naming the instance."""
    from pyro.spec.matrix import instance_name

    metadata = data.get("metadata") if isinstance(data, Mapping) else None
    run = metadata.get("name") if isinstance(metadata, Mapping) else None
    where = f"in matrix instance {instance_name(str(run or 'run'), values)}"
    return SpecError(error.issues, f"{where}; {error.hint}" if error.hint else where)


def _load_matrix_data(
    data: Mapping[str, object],
    *,
    name: str,
    base_dir: Path | None,
    vars: Mapping[str, object] | None,
) -> LoadedSpec:
    """:func:`load_spec_data` of a Run with a matrix: each instance rendered with its
    values (a matrix always renders, ``vars`` or not).

    Raises:
        SpecError: as :func:`_load_matrix_text`.
    """
    from pyro.spec.matrix import check_expansion, combinations, instance

    def nowhere(pointer: str) -> tuple[int, int] | None:
        return None

    combos = combinations(data, name, nowhere)
    check_expansion(combos, vars, len(repr(data)), name, nowhere)
    first: LoadedSpec | None = None
    instances = []
    for values in combos:
        try:
            loaded = _load_plain_data(
                data, name=name, base_dir=base_dir, vars={**(vars or {}), **values}
            )
        except SpecError as error:
            raise _in_instance(error, data, values) from None
        spec = loaded.spec
        assert isinstance(spec, RunSpec)
        instances.append(instance(spec, values))
        first = first or loaded
    assert first is not None
    return replace(first, instances=tuple(instances))


def _load_plain_text(
    text: str,
    *,
    name: str,
    base_dir: Path,
    path: Path | None,
    vars: Mapping[str, object] | None,
) -> list[LoadedSpec]:
    from pyro.spec.yaml import parse_documents  # text only: data input never needs YAML

    template = render_collecting(text, vars, name)
    rendered = template.text
    issues: list[SpecIssue] = []
    try:
        documents = parse_documents(rendered, name)
    except YamlProblem as problem:
        # Still validate the documents that parsed, so one run reports every problem.
        issues.extend(problem.issues)
        documents = problem.documents
    loaded: list[LoadedSpec] = []
    for document in documents:
        spec, found = _validate(document, name, locate=True)
        issues.extend(found)
        if spec is not None:
            loaded.append(LoadedSpec(spec, path, base_dir, document.index, name))
    if issues or template.issues:
        raise undefined_error(_ordered(_without_consequences(template, issues, text)))
    return loaded


def _without_consequences(
    template: Rendered, issues: list[SpecIssue], text: str
) -> list[SpecIssue]:
    """The undefined variables, then the issues found on lines that use none of them
    (issues located at the template lines the user wrote)."""
    located = _to_template_lines(_ordered(issues), text, template.text)
    return template.issues + [i for i in located if i.line not in template.lines]


def _ordered(issues: list[SpecIssue]) -> list[SpecIssue]:
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.column or 0))


def _to_template_lines(issues: list[SpecIssue], text: str, rendered: str) -> list[SpecIssue]:
    """Point issues found in rendered text at the template lines the user wrote."""
    mapping = template_line_map(text, rendered)
    if mapping is None:
        return issues
    mapped = []
    for issue in issues:
        if issue.line is not None and issue.line in mapping:
            line, exact = mapping[issue.line]
            issue = replace(issue, line=line, column=issue.column if exact else None)
        mapped.append(issue)
    return mapped


def _validate(
    document: YamlDocument, name: str, *, locate: bool
) -> tuple[RunSpec | EnvironmentSpec | None, list[SpecIssue]]:
    data = document.data

    def at(pointer: str) -> tuple[int, int] | None:
        return document.locate(pointer) if locate else None

    def issue(message: str, pointer: str, **details: Any) -> SpecIssue:
        line, column = at(pointer) or (None, None)
        return SpecIssue(message, pointer=pointer, file=name, line=line, column=column, **details)

    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        if "apiVersion" not in data:
            found = None
            message = "missing required key 'apiVersion'"
        else:
            found = repr(api_version)
            message = "unsupported apiVersion"
        return None, [issue(message, "/apiVersion", expected=repr(API_VERSION), found=found)]
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KIND_NAMES:
        message = "missing required key 'kind'" if "kind" not in data else "unknown kind"
        if "kind" in data:
            from pyro.spec.issues import did_you_mean

            message += did_you_mean(kind, list(KIND_NAMES))
        found = repr(kind) if "kind" in data else None
        expected = "one of " + ", ".join(KIND_NAMES)
        return None, [issue(message, "/kind", expected=expected, found=found)]
    model: type[RunSpec | EnvironmentSpec] = RunSpec
    if kind == "Environment":  # its models are defined on first use (see pyro.spec.environment)
        from pyro.spec.environment import EnvironmentSpec

        model = EnvironmentSpec
    try:
        return model.model_validate(data), []
    except ValidationError as error:
        from pyro.spec.issues import issue_from_error  # only needed when something is wrong

        return None, [issue_from_error(detail, model, name, at) for detail in error.errors()]
    except (TypeError, ValueError, RecursionError) as error:
        # pydantic reports bad input as ValidationError; anything else here is still
        # a consequence of odd input (e.g. unhashable YAML values) and must not escape.
        return None, [issue(f"spec cannot be validated: {error}", "")]


def _render_data(
    value: object, vars: Mapping[str, object], name: str, pointer: str, undefined: list[SpecIssue]
) -> Any:
    """Render every templated string of ``value``; undefined variables are added to
    ``undefined`` (at the string's JSON pointer) and rendering goes on."""
    if isinstance(value, str):
        if not has_template(value):
            return value
        rendered = render_collecting(value, vars, name)
        undefined.extend(replace(issue, pointer=pointer, line=None) for issue in rendered.issues)
        return rendered.text
    if isinstance(value, Mapping):
        return {
            key: _render_data(item, vars, name, f"{pointer}/{escape_pointer(str(key))}", undefined)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            _render_data(item, vars, name, f"{pointer}/{index}", undefined)
            for index, item in enumerate(value)
        ]
    return value
