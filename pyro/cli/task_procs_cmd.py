"""``pyro task shell`` and ``pyro task service …``: interactive shells and named services in a
task. Registered on the ``task`` group by :mod:`pyro.cli.task_cmd`, whose context hands these
commands the SDK facade to call.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from pyro.cli.completion import task_ids
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.guest_command import GuestCommand
from pyro.cli.output import marker
from pyro.cli.terminal import byte_writer, echo
from pyro.errors import NotFoundError, UsageError

#: What the guest agent keeps of a service's log (its default output ring).
LOG_KEPT = 1024 * 1024


def _pyro() -> Any:
    make = click.get_current_context().obj
    return make()


@click.command()
@click.argument("task_id", shell_complete=task_ids)
@click.option("--name", default=None, help="Attach to this shell (opened if it is not there).")
@handle_errors
def shell(task_id: str, name: str | None) -> None:
    """Open a shell in TASK_ID on this terminal, or re-attach to shell --name.

    Keys go to the guest (Ctrl-C interrupts its program). Ctrl-] detaches and leaves the shell
    running; 'pyro task shell TASK_ID --name NAME' re-attaches, showing its recent output.
    Exiting the shell ends it.
    """
    from pyro.cli.attach import attach, check_terminal, terminal_size
    from pyro.tasks.shells import attached

    check_terminal()
    pyro = _pyro()
    rows, cols = terminal_size()
    opened = False
    if name is None or not any(s.name == name for s in pyro.list_task_shells(task_id)):
        name = pyro.open_task_shell(task_id, name, rows=rows, cols=cols).name
        opened = True
    marker(
        f"[task] {'opened' if opened else 'attached to'} shell {name} of {task_id}; "
        "Ctrl-] detaches (the shell keeps running)"
    )
    with attached(pyro.tasks, task_id, name) as channel:
        last = attach(channel)
    if last is None:
        marker(f"[task] detached; re-attach with 'pyro task shell {task_id} --name {name}'")
        return
    ended = f"signal {last.signal}" if last.signal is not None else f"exit code {last.exit_code}"
    marker(f"[task] shell {name} ended ({ended})")
    pyro.close_task_shell(task_id, name)


@click.group()
def service() -> None:
    """Named long-running processes in a task (dev servers, databases): start, list, status,
    logs, restart, stop. They outlive the CLI call that started them."""


def _show(info: Any, as_json: bool) -> None:
    if as_json:
        echo_json({"ok": True, "service": info.model_dump(mode="json")})
        return
    state = info.state
    if info.state != "running" and (info.exit_code is not None or info.signal is not None):
        how = f"signal {info.signal}" if info.signal is not None else f"exit {info.exit_code}"
        state = f"{info.state} ({how})"
    echo(
        f"{info.name:<16} {state:<18} pid={info.pid or '-'}  restarts={info.restarts}  "
        f"{shlex.join(info.argv)}" + (f"  [ready: {info.readiness}]" if info.readiness else "")
    )


def _readiness_flags(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--ready-port",
                type=click.IntRange(1, 65535),
                help="Ready when this guest port accepts TCP connections.",
            ),
            click.option(
                "--ready-http",
                metavar="PATH",
                help="Ready when GET PATH on --ready-port answers < 400.",
            ),
            click.option("--ready-cmd", metavar="CMD", help="Ready when CMD (sh -c) exits 0."),
            click.option(
                "--ready-timeout",
                type=click.FloatRange(0, 3600, min_open=True),
                default=60.0,
                show_default=True,
                help="Seconds to wait for ready.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@service.command(cls=GuestCommand, context_settings={"allow_interspersed_args": True})
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name")
@click.argument("command", nargs=-1, required=True)
@_readiness_flags
@click.option("--env", "env_items", multiple=True, metavar="K=V")
@click.option("--cwd", default=None, help="Guest folder (default /workspace).")
@json_option
@handle_errors
def start(
    task_id: str,
    name: str,
    command: tuple[str, ...],
    ready_port: int | None,
    ready_http: str | None,
    ready_cmd: str | None,
    ready_timeout: float,
    env_items: tuple[str, ...],
    cwd: str | None,
    as_json: bool,
) -> None:
    """Start service NAME in TASK_ID running COMMAND and wait until it is ready."""
    from pyro.cli.run_cmd import SHELL_CHARS
    from pyro.cli.vars import parse_vars

    argv = list(command)
    if len(command) == 1 and SHELL_CHARS.search(command[0]):
        argv = ["/bin/sh", "-c", command[0]]
    info = _pyro().start_task_service(
        task_id,
        name,
        argv,
        env={k: str(v) for k, v in (parse_vars(env_items, option="--env") or {}).items()},
        cwd=cwd,
        ready_port=ready_port,
        ready_http=ready_http,
        ready_cmd=ready_cmd,
        ready_timeout_s=ready_timeout,
    )
    _show(info, as_json)


@service.command(name="list")
@click.argument("task_id", shell_complete=task_ids)
@json_option
@handle_errors
def list_(task_id: str, as_json: bool) -> None:
    """The services of TASK_ID and their state."""
    infos = _pyro().list_task_services(task_id)
    if as_json:
        echo_json({"ok": True, "services": [i.model_dump(mode="json") for i in infos]})
        return
    if not infos:
        marker(f"[task] {task_id} has no services")
    for info in infos:
        _show(info, False)


@service.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name", required=False)
@json_option
@handle_errors
def status(task_id: str, name: str | None, as_json: bool) -> None:
    """State of service NAME of TASK_ID (all of them without NAME)."""
    if name is None:
        click.get_current_context().invoke(list_, task_id=task_id, as_json=as_json)
        return
    _show(_pyro().status_task_service(task_id, name), as_json)


@service.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until it ends.")
@json_option
@handle_errors
def logs(task_id: str, name: str, follow: bool, as_json: bool) -> None:
    """The log (stdout and stderr) of service NAME of TASK_ID; the last 1 MiB is kept."""
    pyro = _pyro()
    got = pyro.logs_task_service(task_id, name)
    if as_json:
        if follow:
            raise UsageError("--follow and --json do not go together", "use one of them")
        echo_json({"ok": True, **got.model_dump(mode="json")})
        return
    write = byte_writer(sys.stdout)
    if got.missed:
        marker(f"[task] the first {got.missed} bytes of the log are gone (1 MiB is kept)")
    write(got.data)
    shown = len(got.data)
    # One read is at most 512 KiB: read on to the end of what is kept, no further (a
    # service that writes without pause would otherwise be followed without --follow).
    while got.data and shown < LOG_KEPT:
        got = pyro.logs_task_service(task_id, name, got.cursor)
        write(got.data)
        shown += len(got.data)
    while follow and got.running:
        got = pyro.logs_task_service(task_id, name, got.cursor, wait_s=5.0)
        write(got.data)


@service.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name")
@json_option
@handle_errors
def restart(task_id: str, name: str, as_json: bool) -> None:
    """Kill service NAME of TASK_ID if it runs and start it again (waits until ready)."""
    _show(_pyro().restart_task_service(task_id, name), as_json)


@service.command()
@click.argument("task_id", shell_complete=task_ids)
@click.argument("name", required=False)
@json_option
@handle_errors
def stop(task_id: str, name: str | None, as_json: bool) -> None:
    """Stop service NAME of TASK_ID (TERM, KILL after 10 s); its log stays. Without NAME:
    every running service."""
    pyro = _pyro()
    if name is not None:
        _show(pyro.stop_task_service(task_id, name), as_json)
        return
    stopped = [
        pyro.stop_task_service(task_id, i.name)
        for i in pyro.list_task_services(task_id)
        if i.state == "running"
    ]
    if as_json:
        echo_json({"ok": True, "services": [i.model_dump(mode="json") for i in stopped]})
        return
    if not stopped:
        raise NotFoundError(f"task {task_id} has no running services")
    for info in stopped:
        _show(info, False)
