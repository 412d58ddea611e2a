"""Commands whose last argument is a guest's command line (``run``, ``vm exec``, ``task exec``).

pyro's options may come before or after its own positionals, and everything after ``--``
is the guest command. Without ``--``, an option after the guest command's first word is
ambiguous (``pyro run debian:12 grep -q x f``: is ``-q`` grep's or pyro's?). click would
take it as pyro's, or refuse it as unknown (``No such option: -c``); either way the user
meant it for the guest. So it is refused before parsing, with the command line that
says it: the guest command after ``--``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import click


class HintedUsageError(click.UsageError):
    """A usage error that also says what to type instead (shown as ``hint:``)."""

    def __init__(self, message: str, hint: str, ctx: click.Context | None = None) -> None:
        super().__init__(message, ctx)
        self.hint = hint


class GuestCommand(click.Command):
    """A command whose last argument (``nargs=-1``) is the guest command line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:  # shell completion parses half-typed lines
            check_option_order(self, ctx, args)
        return super().parse_args(ctx, args)


def check_option_order(command: click.Command, ctx: click.Context, args: Sequence[str]) -> None:
    """Refuse an option that comes after the first word of the guest command, before ``--``.

    Raises:
        HintedUsageError: such an option; the hint is the command line with ``--`` in.
    """
    fixed = 0
    for param in command.params:
        if isinstance(param, click.Argument):
            if param.nargs == -1:
                break
            fixed += 1
    takes_value = {
        name
        for param in command.params
        if isinstance(param, click.Option) and not (param.is_flag or param.count)
        for name in param.opts
    }
    positionals = 0
    first: int | None = None
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            return
        if word.startswith("-") and word != "-":
            if first is not None:
                suggestion = shlex.join([*args[:first], "--", *args[first:]])
                raise HintedUsageError(
                    f"{word!r} comes after the guest command {args[first]!r}; "
                    "pyro would take it as its own option",
                    f"put the guest command after '--': {ctx.command_path} {suggestion}",
                    ctx,
                )
            if word in takes_value:  # its value is the next word
                index += 1
        else:
            positionals += 1
            if positionals == fixed + 1:
                first = index
        index += 1
