"""``pyro task …``: persistent task workspaces (one VM, many commands, a journal)."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pyro.cli.completion import environments, task_ids
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.flags import BACKENDS, MEMORY_MIB, POSITIVE_SECONDS, TIMEOUT_SECONDS, VCPUS
from pyro.cli.guest_command import GuestCommand
from pyro.cli.output import marker
from pyro.cli.stdin_flag import stdin_option
from pyro.cli.terminal import byte_writer, echo
from pyro.errors import UsageError

if TYPE_CHECKING:
    from pyro.sdk import Pyro


def _pyro() -> Pyro:
    from pyro.sdk import Pyro

    return Pyro()


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r} is not K=V", f"write {flag} KEY=VALUE")
        out[key] = value
    return out


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    return f"{max(0.0, time.time() - ts):.0f}s ago"


def _usage(usage: Any) -> str:
    """``task status``'s usage row: host cost, then the guest's view."""
    if usage is None:
        return "-"

    def mib(value: int | None) -> str:
        return "?" if value is None else f"{value / (1 << 20):.0f}"

    parts = []
    if usage.vmm_cpu_seconds is not None:
        parts.append(f"host cpu {usage.vmm_cpu_seconds:.1f}s ram {mib(usage.vmm_memory_bytes)} MiB")
    if usage.guest_cpu_busy_percent is not None:
        parts.append(f"guest cpu {usage.guest_cpu_busy_percent:.0f}%")
    if usage.guest_memory_total_bytes is not None:
        used, total = usage.guest_memory_used_bytes, usage.guest_memory_total_bytes
        parts.append(f"mem {mib(used)}/{mib(total)} MiB")
    if usage.guest_disk_total_bytes is not None:
        used, total = usage.guest_disk_used_bytes, usage.guest_disk_total_bytes
        parts.append(f"disk {mib(used)}/{mib(total)} MiB")
    if usage.note:
        parts.append(f"({usage.note})")
    return ", ".join(parts) or "-"


def _show(info: Any, as_json: bool, *, verbose: bool = False) -> None:
    if as_json:
        echo_json({"ok": True, "task": info.model_dump(mode="json")})
        return
    line = (
        f"{info.id}  {info.state:<8} {info.environment}  vcpus={info.vcpus} "
        f"memory_mib={info.memory_mib} commands={info.command_count}"
        + (f"  name={info.name}" if info.name else "")
        + (f"  uptime={info.uptime_s:.1f}s" if info.uptime_s is not None else "")
        + (
            f"  network={_network(info.network)}"
            if info.network["policy"] != "off" or info.network["publish"]
            else ""
        )
        + (f"  ({info.reason})" if info.reason else "")
    )
    echo(line)
    if not verbose:
        return
    last = info.last_command
    rows = [
        ("backend", info.backend),
        ("pid", info.pid or "-"),
        ("workspace", info.workspace),
        ("disk", f"{info.disk_bytes / (1 << 20):.1f} MiB"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items())) or "-"),
        ("ttl", f"{info.ttl_seconds}s" if info.ttl_seconds else "-"),
        (
            "idle timeout",
            f"{info.idle_timeout_seconds}s ({info.idle_action})"
            if info.idle_timeout_seconds
            else "-",
        ),
        ("memory file", f"{info.memory_file_bytes / (1 << 20):.1f} MiB"),
        ("usage", _usage(info.usage)),
        ("last activity", _ago(info.last_activity_at)),
        ("secrets", ", ".join(info.secret_names) or "-"),
        ("snapshots", ", ".join(info.snapshots) or "-"),
        ("network", _network(info.network)),
        ("services", ", ".join(info.services) or "-"),
        (
            "last command",
            f"#{last.seq} {shlex.join(last.argv)} -> exit {last.exit_code} "
            f"({last.duration_ms} ms, {_ago(last.finished_at)})"
            if last
            else "-",
        ),
    ]
    for key, value in rows:
        echo(f"  {key + ':':<15}{value}")


def _network(network: dict[str, Any]) -> str:
    from pyro.net.policy import NetworkConfig
    from pyro.tasks.network import describe

    return describe(NetworkConfig.from_dict(network))


@click.group()
@click.pass_context
def task(ctx: click.Context) -> None:
    """Persistent task workspaces: one VM that many commands run in, with a journal."""
    # How every task command reaches the SDK, the file commands (task_files_cmd) included:
    # they take it from this group's context.
    ctx.obj = _pyro


@task.command()
@click.argument("environment", shell_complete=environments)
@click.option("--seed-path", type=click.Path(path_type=Path), help="Host folder → /workspace.")
@click.option("--name", default=None)
@click.option("--label", "labels", multiple=True, metavar="K=V")
@click.option("--vcpus", type=VCPUS)
@click.option("--memory-mib", type=MEMORY_MIB)
@click.option(
    "--ttl-seconds", type=POSITIVE_SECONDS, help="Delete the task this long after creation."
)
@click.option(
    "--idle-timeout-seconds", type=POSITIVE_SECONDS, help="Stop it after this long without exec."
)
@click.option(
    "--idle-action",
    type=click.Choice(["stop", "pause"]),
    default="stop",
    show_default=True,
    help="What the idle timeout does: stop, or pause with the memory kept.",
)
@click.option("--secret", "secrets", multiple=True, metavar="NAME=VALUE")
@click.option("--secret-file", "secret_files", multiple=True, metavar="NAME=PATH")
@click.option("--backend", type=BACKENDS, envvar="PYRO_BACKEND", default=None)
@click.option(
    "--network",
    type=click.Choice(["off", "egress", "allowlist"]),
    default="off",
    show_default=True,
    help="Network policy, as a Run spec's network.policy; kept for every boot of the task.",
)
@click.option(
    "--allow", "allow", multiple=True, metavar="HOST[:PORT]", help="Destination (allowlist)."
)
@click.option(
    "--publish",
    "publish",
    multiple=True,
    metavar="HOST:GUEST",
    help="Publish a guest port on 127.0.0.1:HOST of the host.",
)
@click.option("--id-only", is_flag=True, help="Print only the task id.")
@json_option
@handle_errors
def create(
    environment: str,
    seed_path: Path | None,
    name: str | None,
    labels: tuple[str, ...],
    vcpus: int | None,
    memory_mib: int | None,
    ttl_seconds: int | None,
    idle_timeout_seconds: int | None,
    idle_action: str,
    secrets: tuple[str, ...],
    secret_files: tuple[str, ...],
    backend: str | None,
    network: str,
    allow: tuple[str, ...],
    publish: tuple[str, ...],
    id_only: bool,
    as_json: bool,
) -> None:
    """Create and boot a task of ENVIRONMENT; prints its id."""
    from pyro.tasks.secrets import Redactor, parse_secret_items

    values = parse_secret_items(secrets, secret_files)
    # A crash log records sys.argv: keep --secret values out of it.
    sys.argv[:] = Redactor(values).all(sys.argv)
    if not as_json and not id_only:
        marker(f"[task] phase=create environment={environment}")
    info = _pyro().create_task(
        environment,
        seed_path=seed_path,
        name=name,
        labels=_pairs(labels, "--label"),
        vcpus=vcpus,
        memory_mib=memory_mib,
        ttl_seconds=ttl_seconds,
        idle_timeout_seconds=idle_timeout_seconds,
        idle_action=idle_action,
        secrets=values,
        backend=None if backend == "auto" else backend,
        network=network,
        allow=allow,
        publish=publish,
    )
    if id_only and not as_json:
        click.echo(info.id)
        return
    if not as_json:
        seed = info.seed
        if seed is not None:
            marker(
                f"[task] phase=seed task_id={info.id} files={seed.files} bytes={seed.bytes}"
                + (f" skipped={len(seed.skipped)}" if seed.skipped else "")
            )
        marker(f"[task] phase=ready task_id={info.id}")
    _show(info, as_json)


@task.command(name="exec", cls=GuestCommand, context_settings={"allow_interspersed_args": True})
@click.argument("task_id", shell_complete=task_ids)
@click.argument("command", nargs=-1, required=True)
@click.option("--timeout-seconds", type=TIMEOUT_SECONDS, default=600, show_default=True)
@click.option("--cwd", default=None, help="Guest folder (default /workspace).")
@click.option("--env", "env_items", multiple=True, metavar="K=V")
@click.option("--secret-env", "secret_env", multiple=True, metavar="NAME")
@stdin_option
@json_option
@handle_errors
def exec_(
    task_id: str,
    command: tuple[str, ...],
    timeout_seconds: int,
    cwd: str | None,
    env_items: tuple[str, ...],
    secret_env: tuple[str, ...],
    stdin_flag: bool | None,
    as_json: bool,
) -> None:
    """Run a command in TASK_ID (the task stays; exit code = the command's).

    pyro's stdin is the command's when it is a file or a pipe (see --stdin).
    """
    from pyro.cli.run_cmd import SHELL_CHARS
    from pyro.cli.stdin_flag import command_stdin

    argv: str | list[str] = list(command)
    if len(command) == 1 and SHELL_CHARS.search(command[0]):
        argv = command[0]
    out = _pyro().exec_task(
        task_id,
        argv,
        timeout_seconds=timeout_seconds,
        cwd=cwd,
        env=_pairs(env_items, "--env"),
        secret_env=list(secret_env),
        on_stdout=None if as_json else byte_writer(sys.stdout),
        on_stderr=None if as_json else byte_writer(sys.stderr),
        stdin=command_stdin(stdin_flag),
    )
    if as_json:
        echo_json({"ok": out.exit_code == 0, **out.model_dump(mode="json")})
    else:
        marker(
            f"[task] task_id={task_id} seq={out.seq} exit_code={out.exit_code} "
            f"duration_ms={out.duration_ms}"
        )
    raise SystemExit(out.exit_code)


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def status(task_id: str, as_json: bool) -> None:
    """State, resources, uptime, command count and last command of TASK_ID."""
    _show(_pyro().status_task(task_id), as_json, verbose=True)


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N.")
@json_option
@handle_errors
def logs(task_id: str, tail: int | None, as_json: bool) -> None:
    """The command journal of TASK_ID (secrets redacted)."""
    out = _pyro().logs_task(task_id, tail=tail)
    if as_json:
        echo_json({"ok": True, **out.model_dump(mode="json")})
        return
    if not out.entries:
        click.echo("no commands yet")
    for e in out.entries:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.started_at))
        if e.kind == "update":
            changes = "; ".join(e.stdout.splitlines())
            echo(f"#{e.seq} {stamp} {shlex.join(e.argv)}: {changes}")
            continue
        result = f"exit {e.exit_code}" if e.error is None else f"error: {e.error}"
        # Start order; a command that ran while others did names them.
        ran_with = f" [ran with {', '.join(f'#{n}' for n in e.overlaps)}]" if e.overlaps else ""
        echo(
            f"#{e.seq} {stamp} [{e.cwd}] {shlex.join(e.argv)} -> {result} "
            f"({e.duration_ms} ms){ran_with}"
        )
        for stream, text in (("stdout", e.stdout), ("stderr", e.stderr)):
            for line in text.splitlines():
                echo(f"    {stream}| {line}")


@task.command(name="list")
@click.option("--name", default=None)
@click.option("--label", "labels", multiple=True, metavar="K=V")
@json_option
@handle_errors
def list_(name: str | None, labels: tuple[str, ...], as_json: bool) -> None:
    """Every task (optionally only those with NAME and all the labels)."""
    tasks = _pyro().list_tasks(name=name, labels=_pairs(labels, "--label"))
    if as_json:
        echo_json({"ok": True, "tasks": [t.model_dump(mode="json") for t in tasks]})
        return
    if not tasks:
        click.echo("no tasks")
    for info in tasks:
        _show(info, False)


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@click.option("--name", default=None, help="New name.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Set a label.")
@click.option("--unlabel", "unlabel", multiple=True, metavar="K", help="Remove a label.")
@json_option
@handle_errors
def update(
    task_id: str,
    name: str | None,
    labels: tuple[str, ...],
    unlabel: tuple[str, ...],
    as_json: bool,
) -> None:
    """Rename TASK_ID or change its labels (journaled)."""
    info = _pyro().update_task(
        task_id, name=name, labels=_pairs(labels, "--label"), unlabel=list(unlabel)
    )
    _show(info, as_json, verbose=not as_json)


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def delete(task_id: str, as_json: bool) -> None:
    """Remove TASK_ID: VM, disk, snapshots, journal, secrets (idempotent)."""
    existed = _pyro().delete_task(task_id)
    if as_json:
        echo_json({"ok": True, "task_id": task_id, "deleted": existed})
    else:
        click.echo(f"{task_id} deleted" if existed else f"{task_id} did not exist (nothing to do)")


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def stop(task_id: str, as_json: bool) -> None:
    """Shut TASK_ID down; its disk and journal stay for `pyro task start`."""
    _show(_pyro().stop_task(task_id), as_json)


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def start(task_id: str, as_json: bool) -> None:
    """Boot TASK_ID again from its own disk."""
    _show(_pyro().start_task(task_id), as_json)


@task.command()
@click.argument("task_id", shell_complete=task_ids)
@click.option("--snapshot", default="baseline", show_default=True)
@json_option
@handle_errors
def reset(task_id: str, snapshot: str, as_json: bool) -> None:
    """Put TASK_ID's disk back to a snapshot (default: as created) and boot it."""
    _show(_pyro().reset_task(task_id, snapshot=snapshot), as_json)


def _register_subgroups() -> None:
    from pyro.cli import task_files_cmd, task_procs_cmd, task_state_cmd

    for command in (
        task_state_cmd.pause,
        task_state_cmd.resume,
        task_state_cmd.fork,
        task_state_cmd.diff,
        task_state_cmd.patch,
        task_files_cmd.export,
        task_files_cmd.file,
        task_files_cmd.sync,
        task_files_cmd.snapshot,
        task_procs_cmd.shell,
        task_procs_cmd.service,
    ):
        task.add_command(command)


_register_subgroups()
