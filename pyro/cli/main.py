"""The ``pyro`` command: a click group whose subcommands are imported only when used.

Keeping imports lazy keeps ``pyro --help`` and ``pyro plan`` fast.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import sys
from typing import NoReturn

import click

from pyro.__about__ import CATALOG_VERSION, __version__
from pyro.cli.errors import run_cli
from pyro.cli.output import add_output_options

# The command uses no pydantic plugins. Unless told so, pydantic looks for them in the
# entry points of every installed distribution when it builds the first model (a cost
# docs/performance.md measures). An explicit setting in the environment wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")

# command name -> "module:attribute"; each module owns its command(s).
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("pyro.cli.spec_cmd:validate", "Validate spec files and report every problem."),
    "plan": ("pyro.cli.spec_cmd:plan", "Show what applying a Run spec would do."),
    "apply": ("pyro.cli.run_cmd:apply", "Carry out a Run spec on a real guest."),
    "run": ("pyro.cli.run_cmd:run", "Run one command in a fresh microVM, then clean up."),
    "env": ("pyro.cli.env_cmd:env", "List, inspect, pull, build, push and prune environments."),
    "vm": ("pyro.cli.vm_cmd:vm", "Manage individual VMs (create, start, exec, stop, ...)."),
    "task": ("pyro.cli.task_cmd:task", "Persistent task workspaces for repeated commands."),
    "mcp": ("pyro.cli.mcp_cmd:mcp", "Serve pyro's tools over MCP (stdio)."),
    "doctor": ("pyro.cli.doctor_cmd:doctor", "Check what this host can run."),
    "cluster": ("pyro.cli.cluster_cmd:cluster", "Join Ray clusters that apply --on runs on."),
    "schema": ("pyro.cli.schema_cmd:schema", "Print a spec kind's JSON Schema, for editors."),
    "demo": ("pyro.cli.run_cmd:demo", "Run the hello example on a real guest."),
    "completion": (
        "pyro.cli.completion:completion",
        "Print the shell completion script for bash, zsh or fish.",
    ),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (target, _) in COMMANDS.items() if _exists(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _exists(entry[0]):
            return None
        module_name, attr = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return add_output_options(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _exists(target: str) -> bool:
    module_name = target.split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    "--version",
    prog_name="pyro",
    message=f"%(prog)s %(version)s (catalog {CATALOG_VERSION})",
)
def cli() -> None:
    """pyro runs commands inside ephemeral microVMs, from declarative specs."""
    if os.environ.get("PYRO_BACKEND"):  # checked for every command, before it runs
        from pyro.cli.flags import check_backend_env

        check_backend_env()


add_output_options(cli)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the CLI and return its exit code (see pyro.cli.errors)."""
    return run_cli(cli, argv, "pyro")


#: Commands that start a guest: they take a start slot before importing what they need.
STARTS_A_GUEST = frozenset({"run", "apply", "demo"})
HELP = frozenset({"-h", "--help"})
#: The options the root group takes before a command's name (pyro.cli.output).
OUTPUT_OPTIONS = frozenset({"-q", "--quiet", "-v", "--verbose"})


def entry() -> NoReturn:
    """The ``pyro`` console script: :func:`main`, then :func:`exit_now` with its code.

    A command that starts a guest first takes a start slot (pyro.host.startslots), so that
    many runs started at once on a few CPUs start a few at a time.
    """
    if starts_a_guest(sys.argv[1:]):
        from pyro.host.startslots import take_for_process

        try:
            take_for_process()
        except KeyboardInterrupt:  # Ctrl-C while waiting for a slot: nothing started yet
            from pyro.report.failure import EXIT_INTERRUPTED

            click.echo("interrupted", err=True)
            exit_now(EXIT_INTERRUPTED)
    exit_now(main())


def starts_a_guest(args: list[str]) -> bool:
    """Whether the command line ``pyro ARGS`` starts a guest (and is not asking for help)."""
    words = list(args)
    while words and words[0] in OUTPUT_OPTIONS:  # `pyro -q run …`
        words.pop(0)
    return bool(words) and words[0] in STARTS_A_GUEST and not HELP & set(words)


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without tearing the interpreter down.

    A normal exit frees every object and module one by one before the process ends; the
    OS reclaims all of it at once anyway, so a short-lived command skips that teardown
    (what it saves: docs/performance.md, "Exit"). What a normal exit promises is kept:
    other threads still running get the normal exit (which waits for them), atexit
    callbacks and finalizers run, and stdout and stderr are flushed. A reader gone by then
    (``pyro plan | head -1``) means EXIT_ERROR, as when it goes away mid-command.
    """
    threading = sys.modules.get("threading")
    if threading is not None and any(
        thread.is_alive() and not thread.daemon
        for thread in threading.enumerate()
        if thread is not threading.main_thread()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away, or the stream was closed
            from pyro.report.failure import EXIT_ERROR

            code = code or EXIT_ERROR
    os._exit(code)
