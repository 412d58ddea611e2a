"""Shell completion: ``pyro completion bash|zsh|fish`` and what TAB offers.

The scripts are click's own (:mod:`click.shell_completion`): a shell calls ``pyro`` back
with ``_PYRO_COMPLETE`` set, and click completes commands and options. The callbacks here
add what click cannot know: environment names (the catalog and what is installed), and
the ids of VMs and tasks. They run on every TAB, so they read only local files, and they
never raise: a broken cache or state folder completes nothing rather than printing a
traceback into the user's shell.
"""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem, get_completion_class

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_PYRO_COMPLETE"


def environments(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Catalog and installed environment names starting with ``incomplete``; a path
    (``./…``, ``/…``, ``~…``) is left to the shell's file completion."""
    if incomplete.startswith((".", "/", "~")):
        return [CompletionItem(incomplete, type="file")]
    names: dict[str, str] = {}
    try:
        from pyro.environments.cache.files import recorded_names
        from pyro.paths import cache_dir

        for name in recorded_names(cache_dir() / "environments"):
            names[name] = "installed"
    except Exception:
        pass
    try:
        from pyro.environments.catalog import catalog_names

        for name in catalog_names():
            names.setdefault(name, "catalog")
    except Exception:
        pass
    return [
        CompletionItem(name, help=where)
        for name, where in sorted(names.items())
        if name.startswith(incomplete)
    ]


def _ids(kind: str, incomplete: str) -> list[CompletionItem]:
    # The registry's own reader validates every record with pydantic and would cost most
    # of a TAB; the few fields shown here are read as plain JSON from the same files
    # (``$PYRO_STATE_DIR/vms/<id>/vm.json``, docs/architecture.md). An unreadable or
    # foreign record is skipped, as the registry skips it.
    import json

    from pyro.paths import state_dir

    items = []
    try:
        folders = sorted(os.scandir(state_dir() / "vms"), key=lambda entry: entry.name)
    except OSError:
        return []
    for folder in folders:
        if not folder.name.startswith(incomplete):
            continue
        try:
            with open(os.path.join(folder.path, "vm.json"), "rb") as stream:
                record = json.loads(stream.read(1 << 20))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("id") != folder.name:
            continue
        if record.get("kind", "vm") != kind:
            continue
        about = [str(record[key]) for key in ("environment", "name") if record.get(key)]
        items.append(CompletionItem(folder.name, help=" ".join(about) or None))
    return items


def vm_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Ids of the VMs (not tasks) in ``$PYRO_STATE_DIR`` starting with ``incomplete``."""
    return _ids("vm", incomplete)


def task_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Ids of the tasks in ``$PYRO_STATE_DIR`` starting with ``incomplete``."""
    return _ids("task", incomplete)


@click.command()
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL; load it from your shell's startup file.

    \b
    bash (~/.bashrc):                 eval "$(pyro completion bash)"
    zsh (~/.zshrc):                   eval "$(pyro completion zsh)"
    fish (~/.config/fish/config.fish): pyro completion fish | source

    It completes commands, options, environment names, and VM and task ids.
    """
    completer = get_completion_class(shell)
    assert completer is not None  # every name in SHELLS is one of click's
    root = ctx.find_root()
    click.echo(completer(root.command, {}, root.info_name or "pyro", COMPLETE_VAR).source())
