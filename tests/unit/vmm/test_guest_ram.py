"""Finding a VMM's shared guest RAM (a memfd) for a save, against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.errors import VMMError
from pyro.vmm.base import VMHandle
from pyro.vmm.qemu_snapshot import _guest_ram

# Holds a small memfd and a larger one (the "guest RAM"), then waits for stdin to close.
HOLDER = """
import os, sys
small = os.memfd_create("other"); os.ftruncate(small, 4096)
ram = os.memfd_create("ram0"); os.ftruncate(ram, 8 << 20); os.pwrite(ram, b"guest", 1 << 20)
print("ready", flush=True)
sys.stdin.read()
"""


def _handle(pid: int, tmp_path: Path) -> VMHandle:
    return VMHandle(
        vm_id="vm-1",
        backend="qemu-tcg",
        pid=pid,
        workdir=tmp_path,
        agent_endpoint="agent.sock",
        started_at=0.0,
        start_ticks=0.0,
    )


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.communicate("")


def test_the_largest_memfd_is_the_guest_ram(holder: subprocess.Popen[str], tmp_path: Path) -> None:
    fd = _guest_ram(_handle(holder.pid, tmp_path))
    try:
        assert os.fstat(fd).st_size == 8 << 20
        assert os.pread(fd, 5, 1 << 20) == b"guest"
    finally:
        os.close(fd)


def test_a_process_without_shared_ram_cannot_be_saved(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE) as proc:
        try:
            with pytest.raises(VMMError, match="no shared guest RAM"):
                _guest_ram(_handle(proc.pid, tmp_path))
        finally:
            proc.communicate(b"\n")


def test_a_vanished_process_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    with pytest.raises(VMMError, match="cannot list the files"):
        _guest_ram(_handle(int(proc.stdout), tmp_path))
