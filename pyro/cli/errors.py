"""The CLI's one error handler: every failure becomes an exit code and a readable message.

Exit codes (contract §3):

====  =====================================================================================
0     success
1     a :class:`~pyro.errors.PyroError`: ``error: SUMMARY`` + ``hint: HINT`` on stderr, or
      ``{"ok": false, "error": {"type", "message", "hint"}}`` on stdout with ``--json``
2     a usage error (click's, or :class:`pyro.errors.UsageError`)
3     a bug: the traceback goes to ``$PYRO_STATE_DIR/logs/crash-<timestamp>.log`` and the
      user sees only that path and "this is a bug in pyro"
130   interrupted (Ctrl-C); cleanup has already run in the executor's ``finally`` blocks
====  =====================================================================================

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
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from pyro.errors import PyroError, UsageError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130

JSON_HELP = "Print one JSON document on stdout instead of text."


def json_option(func: Callable[P, R]) -> Callable[P, R]:
    """The shared ``--json`` flag; the callback receives it as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, default=False, help=JSON_HELP)(func)


def echo_json(data: Any) -> None:
    """Write one JSON document (sorted keys, indent 2) to stdout."""
    import json  # lazy: keeps `pyro --help` start-up small

    click.echo(json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False))


def report_error(
    error_type: str,
    message: str,
    hint: str | None,
    *,
    as_json: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    """Show one error: JSON on stdout with ``--json``, else ``error:``/``hint:`` on stderr."""
    if as_json:
        body: dict[str, Any] = {"type": error_type, "message": message, "hint": hint}
        body.update(extra or {})
        echo_json({"ok": False, "error": body})
        return
    # Messages can quote guest or registry text (a serial log tail, a name): on a terminal,
    # without its escape sequences and control characters.
    from pyro.cli.terminal import echo

    echo(f"error: {message}", err=True)
    if hint:
        echo(f"hint: {hint}", err=True)


#: Options whose value is, or may hold, a secret (``K=V`` pairs, secret values).
SECRET_OPTIONS = frozenset({"--env", "-e", "--secret", "--secret-file", "--var"})
REDACTED = "[REDACTED]"
_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.DOTALL)
#: Secret values shorter than this are not hunted for in the traceback (too many false hits).
_MIN_HUNTED = 4


def redact_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` fit for a crash log, and the values that were taken out.

    Out go: the value of every option in :data:`SECRET_OPTIONS` (``--env K=V`` and
    ``--env=K=V`` keep ``K``), the value of every ``KEY=VALUE`` word, every word with
    whitespace in it (a shell snippet), and the whole guest command after ``--``.
    """
    out: list[str] = []
    removed: list[str] = []

    def pair(word: str) -> str:
        match = _PAIR.match(word)
        if match:
            removed.append(match.group(2))
            return f"{match.group(1)}={REDACTED}"
        removed.append(word)
        return REDACTED

    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if index == 1:
            out.append(word)  # the program
        elif word == "--":
            rest = words[index:]
            removed.extend(rest)
            out.append(word)
            out.extend(REDACTED for _ in rest)
            break
        elif word in SECRET_OPTIONS:
            out.append(word)
            if index < len(words):
                out.append(pair(words[index]))
                index += 1
        elif word.startswith("--") and word.split("=", 1)[0] in SECRET_OPTIONS and "=" in word:
            name, value = word.split("=", 1)
            out.append(f"{name}={pair(value)}")
        elif word.startswith("-e") and not word.startswith("--") and len(word) > 2:
            out.append("-e" + pair(word[2:]))
        elif _PAIR.match(word) or any(c.isspace() for c in word):
            out.append(pair(word))
        else:
            out.append(word)
    return out, removed


def redact_text(text: str, values: Sequence[str]) -> str:
    """``text`` with every occurrence of ``values`` (longest first) replaced."""
    for value in sorted(set(values), key=len, reverse=True):
        if len(value) >= _MIN_HUNTED:
            text = text.replace(value, REDACTED)
    return text


def write_crash_log(exc: BaseException) -> Path:
    """Write ``exc``'s traceback to a new crash log under ``$PYRO_STATE_DIR/logs``.

    The log is owner-only (0600, in a 0700 folder). It names the command line with
    secrets taken out (:func:`redact_argv`), and those values are taken out of the
    traceback too; the environment is never written.

    Raises:
        OSError: the log folder or file cannot be written.
    """
    import time
    import traceback

    from pyro.__about__ import __version__
    from pyro.paths import PRIVATE_FILE_MODE, private_dir, state_dir

    private_dir(state_dir())
    folder = private_dir(state_dir() / "logs")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    argv, secrets = redact_argv(sys.argv)
    text = redact_text("".join(traceback.format_exception(exc)), secrets)
    header = f"pyro {__version__}\nargv: {argv!r}\npython: {sys.version.split()[0]}\n\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(1, 100):
        # A long-lived process (the MCP server) may crash twice within a second.
        suffix = "" if attempt == 1 else f"-{attempt}"
        path = folder / f"crash-{stamp}-{os.getpid()}{suffix}.log"
        try:
            fd = os.open(path, flags, PRIVATE_FILE_MODE)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"too many crash logs named {path.name}")
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        f.write(header + text)
    return path


def _report_bug(exc: BaseException, *, as_json: bool) -> None:
    try:
        where = f"the traceback is in {write_crash_log(exc)}"
    except OSError as log_error:
        where = f"the crash log could not be written ({log_error.strerror or log_error})"
    summary = f"internal error: {type(exc).__name__}: {exc}"
    hint = f"this is a bug in pyro; {where} (please attach it to a bug report)"
    report_error("InternalError", summary, hint, as_json=as_json)


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


@contextmanager
def error_handler(*, as_json: bool = False) -> Iterator[None]:
    """Map everything raised inside to an exit code (``SystemExit``) and a message.

    Raises:
        SystemExit: always, when the body raised anything but a click control-flow exception.
    """
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
        raise  # click's own control flow; run_cli handles it
    except UsageError as exc:
        report_error(exc.type, exc.summary, exc.hint, as_json=as_json)
        raise SystemExit(EXIT_USAGE) from None
    except PyroError as exc:
        data = exc.to_dict()
        extra = {k: v for k, v in data.items() if k not in ("type", "message", "hint")}
        report_error(exc.type, exc.summary, exc.hint, as_json=as_json, extra=extra)
        raise SystemExit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        _silence_stdout()
        raise SystemExit(EXIT_ERROR) from None
    except Exception as exc:
        _report_bug(exc, as_json=as_json)
        raise SystemExit(EXIT_BUG) from None


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a click callback so its errors go through :func:`error_handler`.

    JSON mode is taken from the callback's ``as_json`` keyword (see :func:`json_option`).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with error_handler(as_json=bool(kwargs.get("as_json", False))):
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
    ``--json``), Ctrl-C during parsing or imports (130), and bugs anywhere (3).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    try:
        with error_handler(as_json=as_json):
            result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(f"error: {exc.code}", err=True)
        return EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        if as_json and isinstance(exc, click.UsageError):
            hint = "see 'pyro --help'"
            if exc.ctx is not None:
                hint = f"see '{exc.ctx.command_path} --help'"
            report_error("UsageError", exc.format_message(), hint, as_json=True)
        else:
            exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0
