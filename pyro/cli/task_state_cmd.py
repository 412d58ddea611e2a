"""``pyro task pause|resume|fork|diff|patch``: task state as a thing of its own (docs/tasks.md)."""

from __future__ import annotations

import sys
from pathlib import Path
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


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("path", required=False)
@click.option("--since", default="baseline", show_default=True, metavar="SNAPSHOT")
@click.option("--stat", "stat_only", is_flag=True, help="A line per changed file, no diff.")
@json_option
@handle_errors
def diff(task_id: str, path: str | None, since: str, stat_only: bool, as_json: bool) -> None:
    """What changed in TASK_ID's /workspace (or PATH) since a snapshot (read from its disk)."""
    result = _pyro().diff_task(task_id, path, since=since)
    if as_json:
        echo_json({"ok": True, "diff": result.model_dump(mode="json")})
        return
    if not stat_only:
        click.echo(result.diff, nl=False)
        return
    for change in result.changes:
        counts = f"+{change.insertions} -{change.deletions}" if not change.binary else "binary"
        echo(f"{change.status:<8} {change.path} | {counts}")
    echo(
        f"{len(result.changes)} changed, {result.insertions} insertions(+), "
        f"{result.deletions} deletions(-)"
    )


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("patch_file", metavar="FILE|-")
@json_option
@handle_errors
def patch(task_id: str, patch_file: str, as_json: bool) -> None:
    """Apply a unified diff to TASK_ID's files, all or nothing (exit 1: nothing applied)."""
    from pyro.errors import UsageError

    try:
        data = sys.stdin.buffer.read() if patch_file == "-" else Path(patch_file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the patch {patch_file}: {exc.strerror}") from exc
    result = _pyro().patch_task(task_id, data)
    if as_json:
        echo_json({"ok": result.applied, "patch": result.model_dump(mode="json")})
    elif result.applied:
        echo(f"patched {len(result.files)} file(s): {' '.join(result.files)}")
    else:
        for hunk in result.failed:
            click.echo(f"error: {hunk.path}: hunk #{hunk.hunk} failed: {hunk.reason}", err=True)
        click.echo("hint: nothing was changed; make the patch against the task's files", err=True)
    if not result.applied:
        sys.exit(1)
