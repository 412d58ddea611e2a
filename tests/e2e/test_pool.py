"""The warm pool on real guests: pooled runs, shape changes, concurrency, owner death, MCP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.guest import vmm_processes
from mcp import Client, StdioServerParameters

from pyro import Pyro
from pyro.errors import UsageError
from pyro.execute.result import RunResult
from pyro.machines.registry import VMRegistry

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.guest


def boot_mode(result: RunResult) -> str:
    boot = next(step for step in result.steps if step.action == "boot")
    assert boot.message is not None
    return boot.message.rsplit(", ", 1)[1].rstrip(")")


def run_until_pooled(pyro: Pyro, command: str, **resources: Any) -> list[RunResult]:
    """Run until a run is served by the pool: the first run may boot cold (and save the
    snapshot), the next restores (and points the pool at its shape), then the pool serves."""
    results: list[RunResult] = []
    for _ in range(4):
        result = pyro.run_in_vm("debian:12", command, **resources)
        assert result.ok, result.error
        results.append(result)
        if boot_mode(result) == "pooled":
            return results
        if pyro._warm_pool is not None:
            pyro._warm_pool.wait_filled(60)
    raise AssertionError(f"no run was pooled: {[boot_mode(r) for r in results]}")


def test_pooled_runs_are_fresh_guests_and_close_deletes_the_rest(
    guest_install: Any, pyro_state: Path
) -> None:
    with Pyro(warm_pool=1) as pyro:
        results = run_until_pooled(pyro, "echo $$ > /tmp/mark; echo hi")
        pooled = results[-1]
        assert pooled.steps[1].stdout == "hi\n" and pooled.exit_code == 0
        # Each run gets its own guest: nothing of the previous run is there.
        assert pyro._warm_pool is not None and pyro._warm_pool.wait_filled(60)
        again = pyro.run_in_vm("debian:12", "cat /tmp/mark 2>/dev/null || echo none")
        assert boot_mode(again) == "pooled" and again.steps[1].stdout == "none\n"
        assert again.vm_id != pooled.vm_id
        registry = VMRegistry(pyro_state)
        assert pooled.vm_id not in {r.id for r in registry.list()}  # the run deleted it
        assert pyro._warm_pool.wait_filled(60)
        waiting = [r.id for r in registry.list()]
        assert len(waiting) == 1 and vmm_processes(str(pyro_state))
    assert VMRegistry(pyro_state).list() == []
    assert vmm_processes(str(pyro_state)) == []


def test_the_pool_follows_the_shape_last_run(guest_install: Any, pyro_state: Path) -> None:
    with Pyro(warm_pool=1) as pyro:
        run_until_pooled(pyro, "true")
        assert pyro._warm_pool is not None and pyro._warm_pool.wait_filled(60)
        # A 2-vCPU run cannot use the 1-vCPU guest: it restores its own, and the pool
        # drops the old guest for one of the new shape.
        results = run_until_pooled(pyro, "nproc", vcpus=2)
        assert boot_mode(results[0]) != "pooled"
        assert results[-1].steps[1].stdout == "2\n"
        assert pyro._warm_pool.wait_filled(60)
        records = VMRegistry(pyro_state).list()
        assert [r.vcpus for r in records] == [2]
    assert VMRegistry(pyro_state).list() == []


def test_concurrent_runs_share_the_pool(guest_install: Any, pyro_state: Path) -> None:
    with Pyro(warm_pool=2) as pyro:
        run_until_pooled(pyro, "true")
        assert pyro._warm_pool is not None and pyro._warm_pool.wait_filled(60)
        with ThreadPoolExecutor(4) as threads:
            results = list(
                threads.map(lambda i: pyro.run_in_vm("debian:12", f"echo {i}"), range(4))
            )
        assert [r.steps[1].stdout for r in results] == [f"{i}\n" for i in range(4)]
        assert len({r.vm_id for r in results}) == 4
        modes = [boot_mode(r) for r in results]
        assert 1 <= modes.count("pooled") <= 4, modes
    assert VMRegistry(pyro_state).list() == []
    assert vmm_processes(str(pyro_state)) == []


OWNER = """
import sys
from pyro import Pyro
pyro = Pyro(warm_pool=1)
for _ in range(4):
    result = pyro.run_in_vm("debian:12", "true")
    assert result.ok
    if pyro._warm_pool is not None and pyro._warm_pool.wait_filled(60):
        break
print("ready", flush=True)
sys.stdin.read()
"""


def test_pooled_guests_die_with_their_owner(guest_install: Any, pyro_state: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "ready\n"
        assert len(VMRegistry(pyro_state).list()) == 1
        assert vmm_processes(str(pyro_state))
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 10
    while vmm_processes(str(pyro_state)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vmm_processes(str(pyro_state)) == []  # QEMU died with its owner
    VMRegistry(pyro_state).reap()
    assert VMRegistry(pyro_state).list() == []


def test_pool_size_is_checked() -> None:
    with pytest.raises(UsageError, match="warm_pool must be 0 to 8"):
        Pyro(warm_pool=9)
    with pytest.raises(UsageError):
        Pyro(warm_pool=-1)
    Pyro(warm_pool=0).close()  # no pool: nothing to do


async def mcp_runs(count: int) -> list[dict[str, Any]]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "pyro.cli", "mcp", "serve", "--profile", "vm-run", "--warm-pool", "1"],
        env=dict(os.environ),
        cwd=ROOT,
    )
    results = []
    async with Client(params) as client:
        for _ in range(count):
            reply = await client.call_tool(
                "vm_run", {"environment": "debian:12", "command": "echo pooled"}
            )
            assert not reply.is_error
            results.append(reply.structured_content)
            await anyio.sleep(3)  # time for the pool to refill
    return results


def test_mcp_server_serves_vm_run_from_its_pool(guest_install: Any, pyro_state: Path) -> None:
    results = anyio.run(mcp_runs, 4)
    assert all(r["ok"] and r["steps"][1]["stdout"] == "pooled\n" for r in results)
    assert "pooled)" in results[-1]["steps"][0]["message"]
    assert VMRegistry(pyro_state).list() == []
    assert vmm_processes(str(pyro_state)) == []
