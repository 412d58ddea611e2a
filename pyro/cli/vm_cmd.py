"""``pyro vm …``: individual VMs that outlive one command (create, start, exec, stop, …)."""

from __future__ import annotations

from typing import Any

import click

from pyro.cli.completion import environments, vm_ids
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.flags import BACKENDS, MEMORY_MIB, POSITIVE_SECONDS, TIMEOUT_SECONDS, VCPUS
from pyro.cli.guest_command import GuestCommand
from pyro.cli.output import marker
from pyro.cli.stdin_flag import stdin_option
from pyro.cli.terminal import echo, write_text


def _pyro() -> Any:
    from pyro.sdk import Pyro

    return Pyro()


def _show(info: Any, as_json: bool) -> None:
    if as_json:
        echo_json({"ok": True, "vm": info.model_dump(mode="json")})
        return
    echo(
        f"{info.id}  {info.state:<8} {info.environment}  backend={info.backend} "
        f"vcpus={info.vcpus} memory_mib={info.memory_mib}"
        + (f"  pid={info.pid}" if info.pid else "")
        + (f"  uptime={info.uptime_s:.1f}s" if info.uptime_s is not None else "")
        + (f"  ({info.reason})" if info.reason else "")
    )


@click.group()
def vm() -> None:
    """Manage individual VMs. For one command in a fresh VM, prefer `pyro run`."""


@vm.command()
@click.argument("environment", shell_complete=environments)
@click.option("--vcpus", type=VCPUS)
@click.option("--memory-mib", type=MEMORY_MIB)
@click.option(
    "--ttl-seconds", type=POSITIVE_SECONDS, help="Delete the VM this long after creation."
)
@click.option("--backend", type=BACKENDS, envvar="PYRO_BACKEND", default=None)
@click.option("--name", default=None)
@click.option("--start/--no-start", default=False, help="Boot it right away.")
@json_option
@handle_errors
def create(
    environment: str,
    vcpus: int | None,
    memory_mib: int | None,
    ttl_seconds: int | None,
    backend: str | None,
    name: str | None,
    start: bool,
    as_json: bool,
) -> None:
    """Create a VM of ENVIRONMENT (not started unless --start); prints its id."""
    pyro = _pyro()
    info = pyro.create_vm(
        environment,
        vcpus=vcpus,
        memory_mib=memory_mib,
        ttl_seconds=ttl_seconds,
        backend=None if backend == "auto" else backend,
        name=name,
    )
    if start:
        info = pyro.start_vm(info.id)
    _show(info, as_json)


@vm.command()
@click.argument("vm_id", shell_complete=vm_ids)
@json_option
@handle_errors
def start(vm_id: str, as_json: bool) -> None:
    """Boot VM_ID and wait until its agent answers."""
    _show(_pyro().start_vm(vm_id), as_json)


@vm.command(name="exec", cls=GuestCommand, context_settings={"allow_interspersed_args": True})
@click.argument("vm_id", shell_complete=vm_ids)
@click.argument("command", nargs=-1, required=True)
@click.option("--timeout-seconds", type=TIMEOUT_SECONDS, default=600, show_default=True)
@click.option("--cwd", default=None)
@stdin_option
@json_option
@handle_errors
def exec_(
    vm_id: str,
    command: tuple[str, ...],
    timeout_seconds: int,
    cwd: str | None,
    stdin_flag: bool | None,
    as_json: bool,
) -> None:
    """Run one command in VM_ID, then DELETE the VM (also when the command fails).

    For repeated commands in one VM, use `pyro task`. pyro's stdin is the command's when
    it is a file or a pipe (see --stdin).
    """
    from pyro.cli.run_cmd import SHELL_CHARS
    from pyro.cli.stdin_flag import command_stdin

    argv: str | list[str] = list(command)
    if len(command) == 1 and SHELL_CHARS.search(command[0]):
        argv = command[0]
    out = _pyro().exec_vm(
        vm_id, argv, timeout_seconds=timeout_seconds, cwd=cwd, stdin=command_stdin(stdin_flag)
    )
    if as_json:
        echo_json({"ok": out.exit_code == 0, **out.model_dump(mode="json")})
    else:
        write_text(out.stdout)
        write_text(out.stderr, err=True)
        marker(
            f"[vm] vm_id={vm_id} exit_code={out.exit_code} "
            f"duration_ms={out.duration_ms} deleted={str(out.deleted).lower()}"
        )
    raise SystemExit(out.exit_code)


@vm.command()
@click.argument("vm_id", shell_complete=vm_ids)
@json_option
@handle_errors
def stop(vm_id: str, as_json: bool) -> None:
    """Shut VM_ID down (its disk is kept; `pyro vm start` boots it again)."""
    _show(_pyro().stop_vm(vm_id), as_json)


@vm.command()
@click.argument("vm_id", shell_complete=vm_ids)
@json_option
@handle_errors
def delete(vm_id: str, as_json: bool) -> None:
    """Kill VM_ID if running and remove everything it owns (idempotent)."""
    existed = _pyro().delete_vm(vm_id)
    if as_json:
        echo_json({"ok": True, "vm_id": vm_id, "deleted": existed})
    else:
        click.echo(f"{vm_id} deleted" if existed else f"{vm_id} did not exist (nothing to delete)")


@vm.command()
@click.argument("vm_id", shell_complete=vm_ids)
@json_option
@handle_errors
def status(vm_id: str, as_json: bool) -> None:
    """State, resources, backend and uptime of VM_ID."""
    _show(_pyro().status_vm(vm_id), as_json)


@vm.command()
@click.argument("vm_id", shell_complete=vm_ids)
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@json_option
@handle_errors
def logs(vm_id: str, tail: int | None, as_json: bool) -> None:
    """The serial console log of VM_ID."""
    out = _pyro().logs_vm(vm_id, tail=tail)
    if as_json:
        echo_json({"ok": True, **out.model_dump(mode="json")})
    else:
        echo(out.serial)


@vm.command(name="list")
@json_option
@handle_errors
def list_(as_json: bool) -> None:
    """Every VM pyro knows (VMs whose owner died are reaped first)."""
    vms = _pyro().list_vms()
    if as_json:
        echo_json({"ok": True, "vms": [v.model_dump(mode="json") for v in vms]})
        return
    if not vms:
        click.echo("no VMs")
    for info in vms:
        _show(info, False)
