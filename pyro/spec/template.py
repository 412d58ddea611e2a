"""Jinja2 rendering of spec text, sandboxed and strict (pure).

Jinja2 is imported only when a text actually holds template syntax, so loading a plain
spec (the common case, and ``pyro plan``'s start-up path) never pays for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pyro.errors import SpecError, SpecIssue

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_MARKERS = ("{{", "{%")
# Output limits keep a template from building gigantic strings ("{{ 'x' * 10**10 }}").
MAX_RENDERED_CHARS = 1024 * 1024
MAX_POWER_RESULT = 2**64

_HINT = (
    "define every variable the spec uses: --var NAME=VALUE, --vars-file FILE, or vars= in the SDK"
)


def has_template(text: str) -> bool:
    """True when ``text`` contains Jinja2 expression or statement syntax."""
    return any(marker in text for marker in TEMPLATE_MARKERS)


@functools.cache
def _environment() -> SandboxedEnvironment:
    """One shared environment: it holds no per-render state, and building it is not free."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    class _Environment(SandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "%"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and _number(left) and _number(right) and abs(right) > 64:
                raise _LimitError("exponent too large")
            if operator == "*" and _too_long(left, right):
                raise _LimitError("repeated value too large")
            if operator == "%":
                _check_arguments((left,), first=0)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            _check_arguments((*args, *kwargs.values()), first=0)
            _check_arguments((getattr(__obj, "__self__", None),), first=1)
            return super().call(__context, __obj, *args, **kwargs)

        def wrap_str_format(self, value: Any) -> Any:
            # str.format is wrapped by the sandbox and never reaches call(): check it here.
            if getattr(value, "__name__", "") in ("format", "format_map"):
                _check_arguments((getattr(value, "__self__", None),), first=1)
            return super().wrap_str_format(value)

    # Jinja comments ("{# ... #}") are switched off: shell code in run strings uses "${#var}",
    # which would open a comment; YAML's own "#" comments do the job.
    environment = _Environment(
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        comment_start_string="{#pyro-comment#",
        comment_end_string="#pyro-comment#}",
    )
    # lipsum() and friends only produce filler text, and lipsum(n) builds it unbounded.
    for name in ("lipsum", "cycler", "joiner"):
        environment.globals.pop(name, None)
    environment.filters = {
        name: _guarded(function) for name, function in environment.filters.items()
    }
    return environment


# The sandbox stops attribute tricks but not resource use: a width or count argument can
# make one call build a gigantic string ("x".ljust(10**9), "%999999999d" % 1,
# "x"|center(10**9)), so such arguments are refused before the call runs.
_WIDTH_RE = re.compile(r"%[-+ #0]*\d{6,}|%[-+ #0]*\d*\.\d{6,}|\{[^{}]*:[^{}]*\d{6,}[^{}]*\}")


def _check_arguments(values: tuple[Any, ...], *, first: int) -> None:
    """Refuse numbers above the output limit (from index ``first``) and huge format widths."""
    for index, value in enumerate(values):
        if index >= first and _number(value) and abs(value) > MAX_RENDERED_CHARS:
            raise _LimitError(f"argument {value} is larger than {MAX_RENDERED_CHARS}")
        if isinstance(value, str) and _WIDTH_RE.search(value):
            raise _LimitError("format width is too large")


def _guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its arguments first; the filtered value itself may be big."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments((*args, *kwargs.values()), first=_first_argument(args))
        return function(*args, **kwargs)

    return guarded


def _first_argument(args: tuple[Any, ...]) -> int:
    # Jinja passes context/eval-context/environment objects before the filtered value.
    index = 0
    while index < len(args) and type(args[index]).__module__.startswith("jinja2"):
        index += 1
    return index + 1


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _too_long(left: object, right: object) -> bool:
    for size, count in ((left, right), (right, left)):
        if isinstance(size, str | list) and isinstance(count, int):
            return len(size) * count > MAX_RENDERED_CHARS
    return False


class _LimitError(Exception):
    pass


def render_template(text: str, vars: Mapping[str, object] | None, name: str) -> str:
    """Render ``text`` with Jinja2 (sandboxed, StrictUndefined); ``{{ vars.NAME }}`` reads vars.

    Text without ``{{``/``{%`` is returned unchanged without importing Jinja2.

    Raises:
        SpecError: a template syntax error, an undefined variable, a sandbox violation or
            any other rendering failure; the issue names the template line.
    """
    if not has_template(text):
        return text
    import jinja2

    environment = _environment()
    try:
        code = environment.compile(text, name=name, filename=name)
        template = environment.template_class.from_code(
            environment, code, environment.make_globals(None)
        )
        rendered = _render_bounded(template.generate(vars=dict(vars or {})))
    except jinja2.TemplateSyntaxError as error:
        message = f"template syntax error: {error.message}"
        found = _source_line(text, error.lineno)
        raise _error(message, name, error.lineno, None, found) from error
    except jinja2.UndefinedError as error:
        line = _template_line(error, name)
        message = f"template variable is undefined: {error.message}"
        raise _error(message, name, line, _HINT, _source_line(text, line)) from error
    except _LimitError as error:
        message = f"template result is too large: {error}"
        raise _error(message, name, _template_line(error, name)) from error
    except Exception as error:  # any failure inside user template code is the user's input
        message = f"template cannot be rendered: {type(error).__name__}: {error}"
        raise _error(message, name, _template_line(error, name)) from error
    return rendered


def _render_bounded(chunks: Iterator[str]) -> str:
    """Join rendered chunks, stopping as soon as the output passes the size limit."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDERED_CHARS:
            raise _LimitError(f"output passes {MAX_RENDERED_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)


def _template_line(error: BaseException, name: str) -> int | None:
    """The template line an error was raised at: Jinja2 maps its frames to template lines."""
    import traceback  # only on errors: keeps the import of this module cheap

    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == name:
            line = frame.lineno
    return line


def _source_line(text: str, line: int | None) -> str | None:
    lines = text.splitlines()
    if line is None or not 0 < line <= len(lines):
        return None
    return repr(lines[line - 1].strip()[:120])


def _error(
    message: str, name: str, line: int | None, hint: str | None = None, found: str | None = None
) -> SpecError:
    return SpecError([SpecIssue(message, file=name, line=line, found=found)], hint)


# Above this many lines, mapping rendered lines back to template lines is skipped (it
# is quadratic in the worst case); errors then name lines of the rendered text.
MAX_MAPPED_LINES = 5000


def template_line_map(template: str, rendered: str) -> dict[int, tuple[int, bool]] | None:
    """Map 1-based lines of ``rendered`` to lines of ``template``: ``{rendered: (line, exact)}``.

    ``exact`` is True when the rendered line is the template line unchanged (so its columns
    are right too). Lines produced by a loop or a substitution map to the template line of
    the block that produced them. Returns None when no mapping is needed or possible.
    """
    if template == rendered:
        return None
    source = template.splitlines()
    output = rendered.splitlines()
    if len(source) == len(output):
        return {n: (n, source[n - 1] == output[n - 1]) for n in range(1, len(output) + 1)}
    if max(len(source), len(output)) > MAX_MAPPED_LINES:
        return None
    import difflib

    mapping: dict[int, tuple[int, bool]] = {}
    matcher = difflib.SequenceMatcher(None, source, output, autojunk=False)
    for tag, s1, s2, o1, o2 in matcher.get_opcodes():
        for offset, line in enumerate(range(o1, o2)):
            if tag == "equal":
                mapping[line + 1] = (s1 + offset + 1, True)
            else:
                mapping[line + 1] = (_closest(source, s1, s2, output[line], offset) + 1, False)
    return mapping


def _closest(source: list[str], start: int, end: int, line: str, offset: int) -> int:
    """The template line in ``source[start:end]`` that most likely produced ``line``.

    A loop body's lines repeat with different values, so the template line sharing the
    longest prefix with the rendered line wins ("- name: build-{{ t }}" for
    "- name: build-all"); without any shared prefix, the block's lines are taken in order.
    """
    best, best_length = -1, 0
    for index in range(start, end):
        length = _shared_prefix(source[index], line)
        if length > best_length and source[index].strip():
            best, best_length = index, length
    if best >= 0 and best_length > len(line) - len(line.lstrip()):
        return best
    return min(start + offset, max(start, end - 1))


def _shared_prefix(left: str, right: str) -> int:
    length = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        length += 1
    return length
