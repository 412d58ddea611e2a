"""Fixtures for tests that boot real guests through pyro's own code paths.

* ``guest_install`` (session): the installed ``debian:12`` environment from the default
  cache (``make test`` pulls or builds it first); skips only when QEMU is missing or the
  environment was never installed (``make environments``).
* ``pyro_state`` (function): a private ``$PYRO_STATE_DIR`` for the test. Teardown deletes
  whatever the test left and then **fails the test** if any VM record, VMM process or VM
  directory was left behind — nothing may leak.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest


def vmm_processes(marker: str) -> list[psutil.Process]:
    """Live VMM processes whose command line mentions ``marker`` (a state dir path)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "cwd"]):
        try:
            name = proc.info["name"] or ""
            if not (name.startswith("qemu-system") or name.startswith("firecracker")):
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            mentioned = marker in cmdline or marker in (proc.info["cwd"] or "")
            if mentioned and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session")
def guest_install() -> Any:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (make setup installs it)")
    from pyro.environments.cache.store import Cache

    install = Cache().lookup("debian:12")
    if install is None:
        pytest.skip("debian:12 is not installed in the cache; run 'make environments'")
    return install


@pytest.fixture
def pyro_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("PYRO_STATE_DIR", str(state))
    yield state
    from pyro.machines.registry import VMRegistry

    registry = VMRegistry(state)
    leftover = [r.id for r in registry.list()]
    for vm_id in leftover:
        registry.delete(vm_id)
    procs = vmm_processes(str(state))
    for proc in procs:
        proc.kill()
    dirs = sorted(p.name for p in (state / "vms").iterdir()) if (state / "vms").is_dir() else []
    assert not leftover, f"the test left VMs behind: {leftover}"
    assert not procs, f"VMM processes were left running: {[p.pid for p in procs]}"
    assert not dirs, f"VM directories were left behind: {dirs}"


def env_without_pyro_state() -> dict[str, str]:
    """The environment for a pyro subprocess (inherits PYRO_STATE_DIR set by the fixture)."""
    return dict(os.environ)
