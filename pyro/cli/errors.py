"""The CLI's one error handler: every failure becomes an exit code and a readable message.

Which exit code and which message is decided in :mod:`pyro.report.failure`, shared with
the MCP server (exit codes: 1 a PyroError, 2 a usage error, 3 a bug, whose traceback
goes to ``$PYRO_STATE_DIR/logs/crash-<timestamp>.log``; 130 interrupted, after cleanup
ran in the executor's ``finally`` blocks). The commands in :data:`PASSTHROUGH` exit with
their guest's code, so their own failures (1, 2 and 3 alike) exit 125 instead. This module
shows it: ``error: SUMMARY`` + ``hint: HINT`` on stderr, or
``{"ok": false, "error": {"type", "message", "hint", ...}}`` on stdout with ``--json``.

How a command module uses it (run, env, vm, task, mcp, doctor all do the same)::

    import click
    from pyro.cli.errors import echo_json, handle_errors, json_option

    @click.command()
    @click.argument("env_name")
    @json_option
    @handle_errors
    def inspect(env_name: str, as_json: bool) -> None:
        result = ...                       # call the SDK; raise PyroError subclasses
        if as_json:
            echo_json({"ok": True, **result.model_dump(mode="json")})
        else:
            click.echo(...)

``@handle_errors`` must sit *below* the click decorators (it wraps the plain callback) and
reads the ``as_json`` keyword that ``@json_option`` adds. Errors that happen before a
callback runs (click parse errors, a subcommand module that fails to import) are handled
by :func:`run_cli`, which ``pyro.cli.main.main`` calls. Commands never call ``sys.exit``
for errors: they raise, and this module decides how it is shown.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import click

# pyro.report.failure (exit codes, error documents) is imported where a command fails:
# a command that succeeds never needs it.

P = ParamSpec("P")
R = TypeVar("R")

#: Commands (names under ``pyro``) whose exit code is their guest command's: pyro's own
#: failures there exit EXIT_CANNOT_RUN, outside the range a guest's code usually takes.
PASSTHROUGH = frozenset({("run",), ("apply",), ("demo",), ("vm", "exec"), ("task", "exec")})

JSON_HELP = "Print one JSON document on stdout instead of text."


def json_option(func: Callable[P, R]) -> Callable[P, R]:
    """The shared ``--json`` flag; the callback receives it as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, default=False, help=JSON_HELP)(func)


def echo_json(data: Any) -> None:
    """Write one JSON document (sorted keys, indent 2) to stdout."""
    import json  # lazy: keeps `pyro --help` start-up small

    click.echo(json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False))


def report_error(error: dict[str, Any], *, as_json: bool) -> None:
    """Show one error document (``{"type", "message", "hint", ...}``): JSON on stdout with
    ``--json``, else ``error:``/``hint:`` on stderr."""
    if as_json:
        echo_json({"ok": False, "error": error})
        return
    # Messages can quote guest or registry text (a serial log tail, a name): on a terminal,
    # without its escape sequences and control characters.
    from pyro.cli.output import verbose
    from pyro.cli.terminal import echo

    echo(f"error: {error['message']}", err=True)
    if verbose():  # every issue, not just the first one the message names
        for issue in error.get("issues", ()):
            echo(f"  {_issue_text(issue)}", err=True)
    if error.get("hint"):
        echo(f"hint: {error['hint']}", err=True)


def _issue_text(issue: dict[str, Any]) -> str:
    """One spec issue of an error document, as ``SpecIssue.render`` writes it."""
    from pyro.errors import SpecIssue

    return SpecIssue(
        message=str(issue.get("message", "")),
        pointer=str(issue.get("pointer") or ""),
        file=issue.get("file"),
        line=issue.get("line"),
        column=issue.get("column"),
        expected=issue.get("expected"),
        found=issue.get("found"),
    ).render()


def _silence_stdout() -> None:
    # The reader of our stdout went away (e.g. `pyro plan | head`): stop writing to it
    # so the interpreter's final flush does not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def passes_exit_code(ctx: click.Context | None) -> bool:
    """Whether ``ctx`` is (inside) a command of :data:`PASSTHROUGH`."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return tuple(reversed(names)) in PASSTHROUGH


def _passes_exit_code_argv(argv: Sequence[str]) -> bool:
    """Whether the command line names a :data:`PASSTHROUGH` command, for what fails before
    its context exists (the root's own checks, a subcommand that fails to import)."""
    words: list[str] = []
    for arg in argv:
        if arg == "--" or len(words) == 2:
            break
        if not arg.startswith("-"):
            words.append(arg)
    return any(tuple(words[: len(names)]) == names for names in PASSTHROUGH)


@contextmanager
def error_handler(*, as_json: bool = False, passthrough: bool = False) -> Iterator[None]:
    """Map everything raised inside to an exit code (``SystemExit``) and a message;
    ``passthrough``: the command's exit code is its guest's (see :data:`PASSTHROUGH`).

    Raises:
        SystemExit: always, when the body raised anything but a click control-flow exception.
    """
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
        raise  # click's own control flow; run_cli handles it
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        from pyro.report.failure import EXIT_INTERRUPTED

        raise SystemExit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        from pyro.report.failure import EXIT_CANNOT_RUN, EXIT_ERROR

        _silence_stdout()
        raise SystemExit(EXIT_CANNOT_RUN if passthrough else EXIT_ERROR) from None
    except Exception as exc:
        from pyro.report.failure import describe

        failure = describe(exc, passthrough=passthrough)
        report_error(failure.document, as_json=as_json)
        raise SystemExit(failure.exit_code) from None


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a click callback so its errors go through :func:`error_handler`.

    JSON mode is taken from the callback's ``as_json`` keyword (see :func:`json_option`),
    pass-through from the command running (:func:`passes_exit_code`).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        passthrough = passes_exit_code(click.get_current_context(silent=True))
        with error_handler(as_json=bool(kwargs.get("as_json", False)), passthrough=passthrough):
            return func(*args, **kwargs)

    return wrapper


def _wants_json(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def run_cli(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click command with pyro's exit-code rules; return the exit code.

    Handles what happens outside any callback: click usage errors (exit 2, JSON with
    ``--json``; 125 for a :data:`PASSTHROUGH` command), Ctrl-C during parsing or imports
    (130), and bugs anywhere (3).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    passthrough = _passes_exit_code_argv(args)
    try:
        with error_handler(as_json=as_json, passthrough=passthrough):
            result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:
        from pyro.report.failure import EXIT_ERROR

        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(f"error: {exc.code}", err=True)
        return EXIT_ERROR
    except click.exceptions.Abort:
        from pyro.report.failure import EXIT_INTERRUPTED

        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        from pyro.report.failure import EXIT_CANNOT_RUN

        hint = getattr(exc, "hint", None)  # pyro.cli.guest_command.HintedUsageError
        if as_json and isinstance(exc, click.UsageError):
            if hint is None:
                hint = "see 'pyro --help'"
                if exc.ctx is not None:
                    hint = f"see '{exc.ctx.command_path} --help'"
            error = {"type": "UsageError", "message": exc.format_message(), "hint": hint}
            report_error(error, as_json=True)
        else:
            exc.show()
            if hint is not None:
                click.echo(f"hint: {hint}", err=True)
        if isinstance(exc, click.UsageError) and (passes_exit_code(exc.ctx) or passthrough):
            return EXIT_CANNOT_RUN
        return exc.exit_code
    return result if isinstance(result, int) else 0
