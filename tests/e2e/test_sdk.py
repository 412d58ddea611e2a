"""The SDK as a Python user meets it, on real guests: results shaped like
``subprocess.run``'s, ``check=True``, and :class:`AsyncPyro` with cancellation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.guest import vmm_processes

from pyro import AsyncPyro, CommandFailedError, Pyro
from pyro.machines.registry import VMRegistry

pytestmark = pytest.mark.guest

ENV = "debian:12"


def test_run_in_vm_result_has_the_commands_streams_and_exit_code(
    guest_install: Any, pyro_state: Path
) -> None:
    result = Pyro().run_in_vm(ENV, "echo out; echo err >&2; exit 3")
    assert (result.ok, result.exit_code) == (False, 3)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert result.model_dump()["stdout"] == "out\n"
    assert VMRegistry(pyro_state).list() == []


def test_check_raises_command_failed_carrying_the_result(
    guest_install: Any, pyro_state: Path
) -> None:
    with pytest.raises(CommandFailedError) as caught:
        Pyro().run_in_vm(ENV, "echo partial; exit 5", check=True)
    error = caught.value
    assert (error.exit_code, error.stdout) == (5, "partial\n")
    assert error.result.exit_code == 5 and "exit code 5" in error.summary
    assert VMRegistry(pyro_state).list() == []  # the VM went all the same

    vm = Pyro().create_vm(ENV)
    with pytest.raises(CommandFailedError) as caught:
        Pyro().exec_vm(vm.id, ["false"], check=True)
    assert caught.value.exit_code == 1
    assert VMRegistry(pyro_state).list() == []


def test_async_run_in_vm_returns_the_same_result(guest_install: Any, pyro_state: Path) -> None:
    async def main() -> tuple[str, int | None]:
        async with AsyncPyro() as apyro:
            result = await apyro.run_in_vm(ENV, ["uname", "-s"], check=True)
            return result.stdout, result.exit_code

    assert asyncio.run(main()) == ("Linux\n", 0)


def test_cancelling_an_async_run_deletes_its_vm_before_the_await_ends(
    guest_install: Any, pyro_state: Path
) -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        apyro = AsyncPyro()
        executing = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_event(group: str, phase: str, fields: Any) -> None:  # in the worker thread
            if phase == "execute":
                loop.call_soon_threadsafe(executing.set)

        run = asyncio.create_task(apyro.run_in_vm(ENV, "sleep 30", on_event=on_event))
        await asyncio.wait_for(executing.wait(), 300)
        seen["vmms_running"] = len(vmm_processes(str(pyro_state)))
        began = time.monotonic()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        seen["cancel_s"] = time.monotonic() - began
        # Checked the moment the await ends, before any fixture teardown could clean up.
        seen["records"] = [r.id for r in VMRegistry(pyro_state).list()]
        seen["vmms_left"] = [p.pid for p in vmm_processes(str(pyro_state))]
        seen["vm_dirs"] = sorted(p.name for p in (pyro_state / "vms").glob("*"))

    asyncio.run(main())
    assert seen["vmms_running"] == 1
    assert seen["records"] == [] and seen["vmms_left"] == [] and seen["vm_dirs"] == []
    assert seen["cancel_s"] < 20, seen  # not the 30 s the command would have taken
