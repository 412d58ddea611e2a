"""Jinja2 rendering of spec text, sandboxed, strict and bounded (pure).

Jinja2 is imported only when a text actually holds template syntax, so loading a plain
spec (the common case, and ``pyro plan``'s start-up path) never pays for it.

The sandbox stops attribute tricks but not resource use, and a spec can come from a cloned
repository or an MCP caller. Every render therefore runs under one budget (see
:class:`_Budget`), checked cooperatively in the render itself, so it stops where it is:

- steps: each loop iteration, call, filter, size-changing operator and output expression
  counts one; more than ``MAX_RENDER_STEPS`` stops the render (nested ``range`` loops);
- time: the same checks stop a render that runs longer than ``MAX_RENDER_SECONDS``;
- size: no value built while rendering (string, list, dict; aliases and shared parts
  counted as often as they would print) may pass ``MAX_RENDERED_CHARS``, and the output
  neither; sizes are checked *before* the operations that multiply them (``*``, ``+``,
  ``~``, ``%``, ``format``, ``join``, ``replace``, ``indent``, ...) run;
- work: the sizes of all values built are summed; more than ``MAX_RENDER_WORK_CHARS``
  stops the render (this bounds the memory held at once);
- numbers: integer results are kept below ``MAX_INT_BITS`` bits.

Hitting any bound is a :class:`~pyro.errors.SpecError` naming the template line.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pyro.errors import SpecError, SpecIssue

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_MARKERS = ("{{", "{%")
# Output limits keep a template from building gigantic strings ("{{ 'x' * 10**10 }}").
MAX_RENDERED_CHARS = 1024 * 1024
MAX_POWER_RESULT = 2**64
MAX_RENDER_STEPS = 1_000_000
MAX_RENDER_SECONDS = 10.0
MAX_RENDER_WORK_CHARS = 32 * 1024 * 1024
MAX_INT_BITS = 1 << 16

UNDEFINED_HINT = (
    "define every variable the spec uses: --var NAME=VALUE, --vars-file FILE, or vars= in the SDK"
)
_LIMIT_HINT = (
    f"a template may build at most {MAX_RENDERED_CHARS} characters per value and run at most "
    f"{MAX_RENDER_STEPS} steps ({MAX_RENDER_SECONDS:g} s); simplify it, or pass large data "
    "with --vars-file instead of building it in the template"
)


def has_template(text: str) -> bool:
    """True when ``text`` contains Jinja2 expression or statement syntax."""
    return any(marker in text for marker in TEMPLATE_MARKERS)


class _LimitError(Exception):
    pass


class _Budget:
    """What one render (or one spec given as data) may still spend; see the module doc."""

    __slots__ = ("deadline", "grown", "steps", "work")

    def __init__(self) -> None:
        self.steps = 0
        self.work = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        # Containers a template grows with append/extend/...: their size so far, so each
        # growth is checked without measuring the whole container again.
        self.grown: dict[int, tuple[object, int]] = {}

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_RENDER_STEPS:
            raise _LimitError(
                f"more than {MAX_RENDER_STEPS} steps (loop iterations, calls and operations)"
            )
        if time.monotonic() > self.deadline:
            raise _LimitError(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")

    def charge(self, size: int) -> None:
        """Count a value of ``size`` characters about to be built (or just built)."""
        if size > MAX_RENDERED_CHARS:
            raise _LimitError(f"a value would be longer than {MAX_RENDERED_CHARS} characters")
        self.work += size
        if self.work > MAX_RENDER_WORK_CHARS:
            raise _LimitError(
                f"the values built add up to more than {MAX_RENDER_WORK_CHARS} characters"
            )


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "pyro_template_budget", default=None
)


def _budget() -> _Budget:
    found = _BUDGET.get()
    return found if found is not None else _Budget()


@contextlib.contextmanager
def render_budget() -> Iterator[None]:
    """Share one budget among every render inside (e.g. all strings of one spec's data)."""
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _size(value: object, limit: int = MAX_RENDERED_CHARS) -> int:
    """About ``len(str(value))`` (an upper estimate), stopping as soon as it passes ``limit``.

    Containers are walked with every shared part counted each time it appears, as ``str()``
    would print it; a container holding itself therefore counts as too large.
    """
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 4
        elif item is None or isinstance(item, bool | float | complex):
            total += 24
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += 2
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item).__name__ == "Namespace":
            total += 12
            with contextlib.suppress(AttributeError):
                stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 64
        if total > limit:
            break
    return total


def _check_size(value: object) -> int:
    size = _size(value)
    if size > MAX_RENDERED_CHARS:
        raise _LimitError(f"a value would be longer than {MAX_RENDERED_CHARS} characters")
    return size


def _built(value: Any, *inputs: object) -> Any:
    """Charge ``value`` (a result) unless it is one of ``inputs`` passed through unchanged."""
    if not any(value is item for item in inputs):
        _budget().charge(_check_size(value))
    return value


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``iterable``, one step per item (every ``{% for %}`` loop goes through here)."""
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


def _format_estimate(template: str, fields: int, args: Iterable[object]) -> int:
    """An upper bound of the size of ``template`` formatted with ``args`` (``fields`` uses)."""
    total = 0
    for arg in args:
        total += _size(arg, MAX_RENDERED_CHARS)
        if total > MAX_RENDERED_CHARS:
            break
    return len(template) + max(fields, 1) * total


def _precheck_method(
    name: str, receiver: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Refuse a str method call whose result would pass the size limit, before it runs."""
    if not isinstance(receiver, str):
        return
    estimate = 0
    if (
        name == "replace"
        and len(args) >= 2
        and isinstance(args[0], str)
        and isinstance(args[1], str)
    ):
        old, new = args[0], args[1]
        count = receiver.count(old) if old else len(receiver) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        estimate = len(receiver) + count * max(0, len(new) - len(old))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            estimate = len(receiver) + receiver.count("\t") * max(size, 0)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((_size(v) for v in args[0].values()), default=1)
        estimate = len(receiver) * max(longest, 1)
    if estimate:
        _budget().charge(estimate)


@functools.cache
def _environment(undefined: Any = None) -> SandboxedEnvironment:
    """One shared environment per kind of undefined value (StrictUndefined unless given):
    it holds no per-render state, and building it is not free."""
    from jinja2 import StrictUndefined, nodes
    from jinja2.compiler import CodeGenerator, Frame, optimizeconst
    from jinja2.runtime import LoopContext
    from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable

    class _CodeGenerator(CodeGenerator):
        """Jinja's code generator with the budget's checks around loops, ``~`` and literals."""

        def visit_For(self, node: nodes.For, frame: Frame) -> None:
            original = node.iter
            node.iter = nodes.Call(
                nodes.EnvironmentAttribute("pyro_loop", lineno=original.lineno),
                [original],
                [],
                None,
                None,
                lineno=original.lineno,
            )
            try:
                super().visit_For(node, frame)
            finally:
                node.iter = original

        @optimizeconst
        def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
            # As Jinja's, with the parts checked before they are joined.
            if frame.eval_ctx.volatile:
                func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
            elif frame.eval_ctx.autoescape:
                func_name = "markup_join"
            else:
                func_name = "str_join"
            self.write(f"{func_name}(environment.pyro_parts((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write(")))")

        def _checked_literal(
            self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame
        ) -> None:
            if getattr(node, "ctx", "load") != "load":
                visit(node, frame)
                return
            self.write("environment.pyro_value(")
            visit(node, frame)
            self.write(")")

        def visit_List(self, node: nodes.List, frame: Frame) -> None:
            self._checked_literal(super().visit_List, node, frame)

        def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
            self._checked_literal(super().visit_Tuple, node, frame)

        def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
            self._checked_literal(super().visit_Dict, node, frame)

    class _Environment(SandboxedEnvironment):
        code_generator_class = _CodeGenerator
        intercepted_binops = frozenset(["+", "*", "**", "%"])

        @staticmethod
        def pyro_loop(iterable: Iterable[Any]) -> Iterator[Any]:
            return _counted(iterable)

        @staticmethod
        def pyro_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
            budget = _budget()
            budget.tick()
            budget.charge(sum(_check_size(part) for part in parts))
            return parts

        @staticmethod
        def pyro_value(value: Any) -> Any:
            budget = _budget()
            budget.tick()
            budget.charge(_check_size(value))
            return value

        @staticmethod
        def concat(parts: Iterable[str]) -> str:
            # Joins the output of macros, call blocks, filter blocks and recursive loops.
            parts = list(parts)
            _budget().charge(sum(len(part) for part in parts))
            return "".join(parts)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget = _budget()
            budget.tick()
            if _number(left) and _number(right):
                _check_numbers(operator, left, right)
            elif operator == "*":
                if _too_long(left, right):
                    raise _LimitError("repeated value too large")
                for seq, count in ((left, right), (right, left)):
                    if isinstance(count, int) and not isinstance(seq, int):
                        budget.charge(_size(seq) * max(count, 0))
            elif operator == "+":
                budget.charge(_size(left) + _size(right))
            elif operator == "%" and isinstance(left, str):
                _check_arguments((left,), first=0)
                budget.charge(_format_estimate(left, left.count("%"), _as_args(right)))
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            budget = _budget()
            budget.tick()
            if __obj is _Environment.pyro_loop:  # a {% for %}: its items are counted
                return _counted(args[0])
            if isinstance(__obj, LoopContext) and args:
                # loop(children) in a recursive loop: its items count like any loop's.
                args = (_counted(args[0]), *args[1:])
            _check_arguments((*args, *kwargs.values()), first=0)
            receiver = getattr(__obj, "__self__", None)
            _check_arguments((receiver,), first=1)
            name = getattr(__obj, "__name__", "")
            if name == "join" and isinstance(receiver, str) and args:
                items = args[0] if isinstance(args[0], list | tuple) else list(args[0])
                budget.charge(len(receiver) * len(items) + _size(items))
                args = (items, *args[1:])
            else:
                _precheck_method(name, receiver, args, kwargs)
            result = super().call(__context, __obj, *args, **kwargs)
            if receiver is not None and modifies_known_mutable(receiver, name):
                _grown(budget, receiver, name, args)
            return _built(result, receiver, *args, *kwargs.values())

        def wrap_str_format(self, value: Any) -> Any:
            # str.format is wrapped by the sandbox and never reaches call(): check it here.
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            template = getattr(value, "__self__", "")
            _check_arguments((template,), first=0)
            fields = template.count("{")

            def checked(*args: Any, **kwargs: Any) -> Any:
                values = [*args, *kwargs.values()]
                if getattr(value, "__name__", "") == "format_map" and args:
                    values = [args[0]]
                _budget().charge(_format_estimate(template, fields, values))
                return wrapped(*args, **kwargs)

            return functools.update_wrapper(checked, value)

    # Jinja comments ("{# ... #}") are switched off: shell code in run strings uses "${#var}",
    # which would open a comment; YAML's own "#" comments do the job.
    environment = _Environment(
        undefined=undefined or StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        comment_start_string="{#pyro-comment#",
        comment_end_string="#pyro-comment#}",
        finalize=_finalize,
    )
    # lipsum() and friends only produce filler text, and lipsum(n) builds it unbounded.
    for name in ("lipsum", "cycler", "joiner"):
        environment.globals.pop(name, None)
    environment.filters = {
        name: _guarded(name, function) for name, function in environment.filters.items()
    }
    return environment


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}``'s value passes here before it is turned into text."""
    budget = _budget()
    budget.tick()
    budget.charge(_check_size(value))
    return value


def _grown(budget: _Budget, receiver: object, name: str, args: tuple[Any, ...]) -> None:
    """Check a container the template just changed in place (list.append, dict.update, ...)."""
    key = id(receiver)
    known = budget.grown.get(key)
    if known is not None and known[0] is receiver and name in ("append", "add", "insert"):
        size = known[1] + _size(args[-1] if args else None) + 4
    elif (
        known is not None
        and known[0] is receiver
        and name not in ("extend", "update", "setdefault")
    ):
        size = known[1]  # pop, remove, clear, sort, ...: it did not grow
    else:
        size = _size(receiver)
    if size > MAX_RENDERED_CHARS:
        raise _LimitError(f"a value would be longer than {MAX_RENDERED_CHARS} characters")
    budget.grown[key] = (receiver, size)


def _as_args(value: object) -> tuple[object, ...]:
    return value if isinstance(value, tuple) else (value,)


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


def _check_numbers(operator: str, left: Any, right: Any) -> None:
    """Keep integer results of ``*`` and ``**`` below MAX_INT_BITS bits."""
    if operator == "**" and abs(right) > 64:
        raise _LimitError("exponent too large")
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if operator == "**" and right > 0:
        bits = max(abs(left).bit_length(), 1) * right
    elif operator == "*":
        bits = abs(left).bit_length() + abs(right).bit_length()
    else:
        return
    if bits > MAX_INT_BITS:
        raise _LimitError(f"an integer result would have more than {MAX_INT_BITS} bits")


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that counts as a step, checks its arguments first and its result after."""
    precheck = _FILTER_PRECHECKS.get(name)

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        first = _first_argument(args)
        _check_arguments((*args, *kwargs.values()), first=first)
        if precheck is not None and len(args) >= first:
            estimate = precheck(args[first - 1 :], kwargs)
            if estimate:
                budget.charge(estimate)
        result = function(*args, **kwargs)
        return _built(result, *args, *kwargs.values())

    return guarded


def _first_argument(args: tuple[Any, ...]) -> int:
    # Jinja passes context/eval-context/environment objects before the filtered value.
    index = 0
    while index < len(args) and type(args[index]).__module__.startswith("jinja2"):
        index += 1
    return index + 1


def _argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any
) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _join_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    value, sep = args[0], _argument(args, kwargs, 1, "d", "")
    count = len(value) if isinstance(value, list | tuple | str | Mapping) else 0
    return len(str(sep)) * count + _size(value) if isinstance(sep, str) else 0


def _replace_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    value, old, new = (
        args[0],
        _argument(args, kwargs, 1, "old", ""),
        _argument(args, kwargs, 2, "new", ""),
    )
    if not (isinstance(value, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    count = value.count(old) if old else len(value) + 1
    return len(value) + count * max(0, len(new) - len(old))


def _indent_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    value, width = args[0], _argument(args, kwargs, 1, "width", 4)
    if not isinstance(value, str):
        return 0
    prefix = width if isinstance(width, int) else len(str(width)) if isinstance(width, str) else 0
    return len(value) + (value.count("\n") + 1) * max(prefix, 0)


def _wordwrap_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    value, width = args[0], _argument(args, kwargs, 1, "width", 79)
    wrap = _argument(args, kwargs, 3, "wrapstring", None)
    if not isinstance(value, str) or not isinstance(width, int) or not isinstance(wrap, str):
        return 0
    return len(value) + (len(value) // max(width, 1) + 1) * len(wrap)


def _format_filter_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    value = args[0]
    if not isinstance(value, str):
        return 0
    return _format_estimate(value, value.count("%"), [*args[1:], *kwargs.values()])


_FILTER_PRECHECKS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], int]] = {
    "join": _join_estimate,
    "replace": _replace_estimate,
    "indent": _indent_estimate,
    "wordwrap": _wordwrap_estimate,
    "format": _format_filter_estimate,
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _too_long(left: object, right: object) -> bool:
    for size, count in ((left, right), (right, left)):
        if isinstance(size, str | list) and isinstance(count, int):
            return len(size) * count > MAX_RENDERED_CHARS
    return False


def render_template(
    text: str, vars: Mapping[str, object] | None, name: str, *, undefined: type | None = None
) -> str:
    """Render ``text`` with Jinja2 (sandboxed, StrictUndefined); ``{{ vars.NAME }}`` reads vars.

    Text without ``{{``/``{%`` is returned unchanged without importing Jinja2. The render is
    bounded (steps, time, sizes; see the module doc); inside :func:`render_budget` every
    render shares one budget. ``undefined`` replaces StrictUndefined (a ``jinja2.Undefined``
    subclass; :mod:`pyro.spec.undefined` passes one that records each use and goes on).

    Raises:
        SpecError: a template syntax error, an undefined variable, a sandbox violation, a
            bound passed, or any other rendering failure; the issue names the template line.
    """
    if not has_template(text):
        return text
    import jinja2

    environment = _environment(undefined)
    try:
        with render_budget():
            code = environment.compile(text, name=name, filename=name)
            template = environment.template_class.from_code(
                environment, code, environment.make_globals(None)
            )
            rendered = _render_bounded(template.generate(vars=dict(vars or {})))
    except jinja2.TemplateSyntaxError as error:
        message = f"template syntax error: {error.message}"
        found = source_line(text, error.lineno)
        raise _error(message, name, error.lineno, None, found) from error
    except jinja2.UndefinedError as error:
        line = _template_line(error, name)
        message = f"template variable is undefined: {error.message}"
        raise _error(message, name, line, UNDEFINED_HINT, source_line(text, line)) from error
    except _LimitError as error:
        message = f"template rendering stopped: {error}"
        line = _template_line(error, name)
        raise _error(message, name, line, _LIMIT_HINT, source_line(text, line)) from error
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
            raise _LimitError(f"the output passes {MAX_RENDERED_CHARS} characters")
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


def source_line(text: str, line: int | None) -> str | None:
    """Line ``line`` of ``text``, stripped and quoted, for an issue's "found" (None if absent)."""
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
