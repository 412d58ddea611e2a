"""Undefined template variables reported with the spec's other problems, not instead of them.

A strict render stops at the first undefined variable, which would hide every other
problem of the file. When that happens the text is rendered again with an undefined value
that records each use (message and template line) and goes on: it prints as
:data:`PLACEHOLDER`, iterates once, and is false. The loader then parses and validates
that text and keeps the problems found on lines that use no undefined variable: those are
the file's own; problems on a using line are consequences of the missing value.

If the second render still fails, or records nothing, the strict error stands as it was.
Pure, like the rest of :mod:`pyro.spec`; Jinja2 is imported only when a variable is missing.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyro.errors import SpecError, SpecIssue
from pyro.spec.template import UNDEFINED_HINT, render_template, source_line

#: What an undefined variable prints as in the second render: a lowercase word, so names,
#: step names and catalog names built from it stay valid and no false problem appears.
PLACEHOLDER = "undefined"

#: At most this many undefined variables are reported per text (a loop can name millions).
MAX_REPORTED = 100


@dataclass
class _Uses:
    """What the second render saw: each message's first line, and every line used on."""

    first: dict[str, int | None] = field(default_factory=dict)
    lines: set[int] = field(default_factory=set)


_USES: contextvars.ContextVar[_Uses | None] = contextvars.ContextVar(
    "pyro_undefined_uses", default=None
)


@dataclass(frozen=True)
class Rendered:
    """A spec text rendered, with the undefined variables it used (if any)."""

    text: str
    issues: list[SpecIssue] = field(default_factory=list)
    """One issue per undefined variable, at the template line of its first use."""
    lines: frozenset[int] = frozenset()
    """Every template line that used an undefined variable."""


def render_collecting(text: str, vars: Mapping[str, object] | None, name: str) -> Rendered:
    """:func:`~pyro.spec.template.render_template`, but undefined variables do not stop it.

    Raises:
        SpecError: any rendering failure other than undefined variables (as
            ``render_template``), or undefined variables the second render cannot get past.
    """
    try:
        return Rendered(render_template(text, vars, name))
    except SpecError as error:
        import jinja2

        if not isinstance(error.__cause__, jinja2.UndefinedError):
            raise
        strict = error
    uses = _Uses()
    token = _USES.set(uses)
    try:
        rendered = render_template(text, vars, name, undefined=_recording_class())
    except SpecError:
        raise strict from strict.__cause__
    finally:
        _USES.reset(token)
    if not uses.first:
        raise strict
    issues = [
        SpecIssue(
            f"template variable is undefined: {message}",
            file=name,
            line=line,
            found=source_line(text, line),
        )
        for message, line in uses.first.items()
    ]
    return Rendered(rendered, issues, frozenset(uses.lines))


def undefined_error(issues: list[SpecIssue]) -> SpecError:
    """The error for ``issues`` when any is an undefined variable: its hint says how to
    define one; otherwise the usual spec hint."""
    undefined = any(issue.message.startswith("template variable is undefined") for issue in issues)
    return SpecError(issues, UNDEFINED_HINT if undefined else None)


def _record(message: str) -> None:
    uses = _USES.get()
    if uses is None:
        return
    line = _template_line()
    if line is not None:
        uses.lines.add(line)
    if message not in uses.first and len(uses.first) < MAX_REPORTED:
        uses.first[message] = line


def _template_line() -> int | None:
    """The template line being rendered: the innermost frame of Jinja2's generated code
    (its globals hold ``debug_info``, pairs of template line = code line)."""
    frame = sys._getframe(1)
    while frame is not None:
        debug_info = frame.f_globals.get("debug_info")
        if isinstance(debug_info, str) and "environment" in frame.f_globals:
            pairs = [tuple(map(int, pair.split("="))) for pair in debug_info.split("&") if pair]
            for template_line, code_line in reversed(pairs):
                if code_line <= frame.f_lineno:
                    return template_line
            return 1
        frame = frame.f_back  # type: ignore[assignment]
    return None


@functools.cache
def _recording_class() -> type[Any]:
    """A ``jinja2.Undefined`` whose every use is recorded and then treated as harmless."""
    import jinja2

    class RecordingUndefined(jinja2.Undefined):
        __slots__ = ()

        def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
            _record(self._undefined_message)
            return self

        __add__ = __radd__ = __sub__ = __rsub__ = _fail_with_undefined_error
        __mul__ = __rmul__ = __div__ = __rdiv__ = _fail_with_undefined_error
        __truediv__ = __rtruediv__ = _fail_with_undefined_error
        __floordiv__ = __rfloordiv__ = _fail_with_undefined_error
        __mod__ = __rmod__ = __pow__ = __rpow__ = _fail_with_undefined_error
        __pos__ = __neg__ = __call__ = __getitem__ = _fail_with_undefined_error
        __lt__ = __le__ = __gt__ = __ge__ = _fail_with_undefined_error

        def __eq__(self, other: object) -> bool:
            _record(self._undefined_message)
            return type(self) is type(other)

        def __ne__(self, other: object) -> bool:
            return not self.__eq__(other)

        __hash__ = jinja2.Undefined.__hash__

        # Jinja types these as never returning; here they do.
        def __int__(self) -> int:  # type: ignore[override]
            _record(self._undefined_message)
            return 0

        def __float__(self) -> float:  # type: ignore[override]
            _record(self._undefined_message)
            return 0.0

        def __str__(self) -> str:
            _record(self._undefined_message)
            return PLACEHOLDER

        def __iter__(self) -> Any:
            _record(self._undefined_message)
            yield self

        def __len__(self) -> int:
            _record(self._undefined_message)
            return 1

        def __bool__(self) -> bool:
            _record(self._undefined_message)
            return False

    return RecordingUndefined
