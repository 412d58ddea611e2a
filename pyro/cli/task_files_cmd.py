"""``pyro task export|file|sync|snapshot``: moving files and disk snapshots of a task.

Registered on the ``task`` group by :mod:`pyro.cli.task_cmd`, whose context hands these
commands the SDK facade to call.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from pyro.cli.completion import task_ids
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.terminal import BinaryOut, echo
from pyro.errors import LimitError, UsageError


def _pyro() -> Any:
    make = click.get_current_context().obj
    return make()


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("path")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="Host path.")
@click.option(
    "--include-git",
    is_flag=True,
    help="Also copy git metadata (.git). Only for a guest you trust: its hooks and config "
    "run commands at your next git command.",
)
@json_option
@handle_errors
def export(task_id: str, path: str, output: Path, include_git: bool, as_json: bool) -> None:
    """Copy a guest file or folder PATH of TASK_ID to the host.

    Git metadata (.git, folders laid out as git folders) is not copied unless --include-git.
    """
    result = _pyro().export_task_path(task_id, path, output, include_git=include_git)
    if as_json:
        echo_json({"ok": True, **result.model_dump(mode="json")})
    else:
        echo(f"{result.files} files, {result.bytes} bytes -> {result.dest}")
        if result.skipped:  # guest names stay out of the terminal: --json lists them
            click.echo(
                f"{len(result.skipped)} not copied (special files, symlinks leaving the "
                "folder, git metadata: --include-git copies it); --json lists them",
                err=True,
            )


@click.group()
def file() -> None:
    """Read, write and list guest files (binary safe, no shell quoting)."""


@file.command(name="read")
@click.argument("task_id", shell_complete=task_ids)
@click.argument("path")
@handle_errors
def file_read(task_id: str, path: str, as_json: bool = False) -> None:
    """Write the guest file PATH of TASK_ID to stdout, byte for byte (to a terminal: cleaned
    of escape sequences and control characters; pipe or redirect it for the exact bytes).

    At most $PYRO_COPY_OUT_MAX_BYTES (default 4 GiB): PATH may be a link to /dev/zero.
    """
    from pyro.machines.copyout import BYTES_ENV, CopyLimits

    limit = CopyLimits.from_env().max_bytes
    out = BinaryOut(sys.stdout)
    try:
        _pyro().copy_task_file(task_id, path, out, max_bytes=limit)
    except LimitError as exc:
        raise LimitError(
            f"{exc.summary} (the copy-out byte limit; the bytes before it were written)",
            f"raise {BYTES_ENV}, or read a part: 'pyro task exec ID -- head -c N FILE'",
        ) from exc
    finally:
        sys.stdout.flush()
        sys.stdout.buffer.flush()


@file.command(name="write")
@click.argument("task_id", shell_complete=task_ids)
@click.argument("path")
@click.option("--from", "source", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--mode", default="644", show_default=True, help="Octal file mode.")
@json_option
@handle_errors
def file_write(task_id: str, path: str, source: Path | None, mode: str, as_json: bool) -> None:
    """Write a host file (--from) or stdin to the guest file PATH of TASK_ID."""
    try:
        bits = int(mode, 8)
    except ValueError:
        raise UsageError(f"--mode {mode!r} is not an octal mode", "e.g. --mode 755") from None
    data: Any = source if source is not None else sys.stdin.buffer
    out = _pyro().write_task_file(task_id, path, data, mode=bits)
    if as_json:
        echo_json({"ok": True, **out.model_dump(mode="json")})
    else:
        echo(f"{out.bytes} bytes -> {out.path}")


@file.command(name="list")
@click.argument("task_id", shell_complete=task_ids)
@click.argument("path", default="/workspace")
@json_option
@handle_errors
def file_list(task_id: str, path: str, as_json: bool) -> None:
    """List the guest folder PATH of TASK_ID (default /workspace)."""
    entries = _pyro().list_task_files(task_id, path)
    if as_json:
        echo_json({"ok": True, "entries": [e.model_dump(mode="json") for e in entries]})
        return
    for e in entries:
        link = f" -> {e.link_target}" if e.link_target else ""
        echo(f"{e.kind:<9} {e.mode:04o} {e.size:>12}  {e.name}{link}")


@click.group()
def sync() -> None:
    """Copy host folders into a task."""


@sync.command(name="push")
@click.argument("task_id", shell_complete=task_ids)
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--dest", default="/workspace", show_default=True)
@json_option
@handle_errors
def sync_push(task_id: str, source: Path, dest: str, as_json: bool) -> None:
    """Copy the host folder SOURCE into TASK_ID (default under /workspace)."""
    result = _pyro().push_task_dir(task_id, source, dest=dest)
    if as_json:
        echo_json({"ok": True, **result.model_dump(mode="json")})
    else:
        echo(f"{result.files} files, {result.bytes} bytes -> {result.dest}")
        for rel in result.skipped:
            echo(f"skipped (not a file, folder or link): {rel}", err=True)


@click.group()
def snapshot() -> None:
    """Disk snapshots of a task (a `baseline` is taken at create)."""


@snapshot.command(name="create")
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name")
@json_option
@handle_errors
def snapshot_create(task_id: str, name: str, as_json: bool) -> None:
    """Snapshot TASK_ID's disk as NAME (the task keeps running)."""
    snap = _pyro().create_task_snapshot(task_id, name)
    if as_json:
        echo_json({"ok": True, "snapshot": snap.model_dump(mode="json")})
    else:
        click.echo(f"snapshot {snap.name} of {task_id} taken in {snap.duration_ms} ms")


@snapshot.command(name="list")
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def snapshot_list(task_id: str, as_json: bool) -> None:
    """The snapshots of TASK_ID."""
    snaps = _pyro().list_task_snapshots(task_id)
    if as_json:
        echo_json({"ok": True, "snapshots": [s.model_dump(mode="json") for s in snaps]})
        return
    for s in snaps:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.created_at))
        echo(f"{s.name:<20} {stamp}")


@snapshot.command(name="delete")
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name")
@json_option
@handle_errors
def snapshot_delete(task_id: str, name: str, as_json: bool) -> None:
    """Delete the snapshot NAME of TASK_ID (idempotent)."""
    existed = _pyro().delete_task_snapshot(task_id, name)
    if as_json:
        echo_json({"ok": True, "task_id": task_id, "snapshot": name, "deleted": existed})
    else:
        click.echo(f"snapshot {name} deleted" if existed else f"no snapshot {name} (nothing to do)")
