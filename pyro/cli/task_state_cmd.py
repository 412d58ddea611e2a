"""``pyro task pause|resume|fork``: task state as a thing of its own (docs/tasks.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pyro.cli.completion import task_ids
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.terminal import echo

if TYPE_CHECKING:
    from pyro.sdk import Pyro


def _pyro() -> Pyro:
    from pyro.sdk import Pyro

    return Pyro()


def _line(info: Any, as_json: bool) -> None:
    """The task as one line (``task status`` shows the rest)."""
    if as_json:
        echo_json({"ok": True, "task": info.model_dump(mode="json")})
        return
    echo(
        f"{info.id}  {info.state:<8} {info.environment}"
        + (f"  name={info.name}" if info.name else "")
        + (f"  memory_file={info.memory_file_bytes / (1 << 20):.1f}MiB" if info.paused_at else "")
        + (f"  forked_from={info.forked_from}" if info.forked_from else "")
    )


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def pause(task_id: str, as_json: bool) -> None:
    """Save TASK_ID's memory, devices and disk and end its VM (state `paused`)."""
    _line(_pyro().pause_task(task_id), as_json)


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def resume(task_id: str, as_json: bool) -> None:
    """Bring a paused TASK_ID back as it was (a stopped one boots from its disk)."""
    _line(_pyro().resume_task(task_id), as_json)


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@click.option("--from", "snapshot", default=None, metavar="SNAPSHOT", help="Fork a disk snapshot.")
@click.option("--name", default=None)
@click.option("--id-only", is_flag=True, help="Print only the new task's id.")
@json_option
@handle_errors
def fork(
    task_id: str, snapshot: str | None, name: str | None, id_only: bool, as_json: bool
) -> None:
    """A new task from TASK_ID (its memory too when it runs or is paused); prints its id."""
    info = _pyro().fork_task(task_id, snapshot=snapshot, name=name)
    if id_only and not as_json:
        click.echo(info.id)
        return
    _line(info, as_json)
