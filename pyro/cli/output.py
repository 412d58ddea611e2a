"""How much a command says on stderr: ``-q/--quiet`` and ``-v/--verbose``.

Every command takes both, before or after its subcommand (``pyro -q run …`` and
``pyro run -q …``); the setting lives on the root click context. Quiet drops the phase
markers, closing summaries and progress displays (errors and what a command prints on
stdout stay); verbose adds details, such as each plan step's result and timing after a
run and every issue of a spec error. ``--json`` is quiet on stderr already.
"""

from __future__ import annotations

from typing import Any

import click

QUIET, NORMAL, VERBOSE = -1, 0, 1
_META = "pyro.output"


def level() -> int:
    """QUIET, NORMAL or VERBOSE, as the command line asked (NORMAL outside a command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return NORMAL
    chosen = ctx.find_root().meta.get(_META, {})
    return QUIET if "quiet" in chosen else VERBOSE if "verbose" in chosen else NORMAL


def quiet() -> bool:
    return level() == QUIET


def verbose() -> bool:
    return level() == VERBOSE


def marker(text: str) -> None:
    """A phase marker or summary line on stderr, unless quiet (guest text made safe)."""
    if not quiet():
        from pyro.cli.terminal import echo

        echo(text, err=True)


def _choose(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if not value or param.name is None:
        return
    chosen = ctx.find_root().meta.setdefault(_META, set())
    chosen.add(param.name)
    if {"quiet", "verbose"} <= chosen and not ctx.resilient_parsing:
        raise click.UsageError("-q/--quiet and -v/--verbose cannot be used together", ctx)


def _options() -> list[click.Option]:
    return [
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_choose,
            help="No phase markers or progress on stderr (errors still show).",
        ),
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=_choose,
            help="More detail on stderr (each step's result and timing, every spec issue).",
        ),
    ]


def add_output_options(command: click.Command) -> click.Command:
    """Give ``command`` and every command under it ``-q/--quiet`` and ``-v/--verbose``."""
    names = {name for param in command.params for name in getattr(param, "opts", ())}
    if "--quiet" not in names:
        command.params.extend(_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_output_options(sub)
    return command
