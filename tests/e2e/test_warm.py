"""Warm starts on real guests: a saved ready guest restored instead of booted.

The snapshot store is the default cache's (where debian:12 is installed); tests that
damage a snapshot leave a valid one behind (the fallback cold boot saves it again).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyro.execute import warm
from pyro.guest.client import AgentClient
from pyro.machines.registry import VMRecord, VMRegistry
from pyro.vmm.snapshot import RAM, STATE, SnapshotStore

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]


def pyro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def new_record(registry: VMRegistry, install: Any, *, ephemeral: bool = True) -> VMRecord:
    from pyro.guest.build import build_agent_initrd

    return registry.create(
        environment="debian:12",
        environment_digest=install.digest,
        kernel=install.kernel,
        initrd=build_agent_initrd(),
        rootfs=install.rootfs,
        backend="qemu-tcg",
        vcpus=install.default_vcpus,
        memory_mib=install.default_memory_mib,
        ephemeral=ephemeral,
        vmm_outlives_owner=not ephemeral,  # a persistent VM's disk outlives its VMM
    )


REASONS: dict[str, str] = {}  # the latest reason given with each status


def start(
    registry: VMRegistry, record: VMRecord, *, restore: bool = True, save: bool = True
) -> tuple[str, AgentClient, list[str]]:
    events: list[str] = []

    def event(status: str, reason: str) -> None:
        events.append(status)
        REASONS[status] = reason

    mode, client = warm.start(
        registry, record, restore=restore, save=save, boot_timeout=60, event=event
    )
    return mode, client, events


@pytest.fixture
def saved(guest_install: Any, pyro_state: Path) -> Iterator[VMRegistry]:
    """A registry in a private state dir, with a valid snapshot of debian:12 in the cache."""
    registry = VMRegistry(pyro_state)
    events: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        record = new_record(registry, guest_install)
        key = warm.snapshot_key(record)
        assert key is not None
        try:
            _, client, more = start(registry, record)
            client.close()
            events += more
        finally:
            registry.delete(record.id)
        if SnapshotStore().find(key) is not None:
            break
        # Another pyro process (sharing the default cache) may be saving it right now:
        # by design this run then did not; try again once that save is done.
        assert "save-failed" not in events and time.monotonic() < deadline, events
        time.sleep(1)
    yield registry


def test_restored_guest_runs_commands_and_moves_files(
    saved: VMRegistry, guest_install: Any
) -> None:
    record = new_record(saved, guest_install)
    try:
        mode, client, events = start(saved, record)
        with client:
            assert (mode, events) == ("restore", [])
            result = client.exec(["sh", "-c", "echo hello; id -u"], timeout_s=60)
            assert (result.exit_code, result.stdout) == (0, b"hello\n0\n")
            data = os.urandom(300_000)
            assert client.put_file("/root/blob", io.BytesIO(data)) == len(data)
            copy = io.BytesIO()
            client.get_file("/root/blob", copy)
            assert copy.getvalue() == data
            guest_now = int(client.exec(["date", "+%s"], timeout_s=60).stdout)
            assert abs(guest_now - time.time()) < 30  # set by this run's hello
    finally:
        saved.delete(record.id)


def test_hello_sets_the_clock_of_a_restored_guest(saved: VMRegistry, guest_install: Any) -> None:
    from pyro.vmm import get_backend
    from pyro.vmm.base import VMHandle

    record = new_record(saved, guest_install)
    try:
        _, client, _ = start(saved, record)
        client.close()
        handle = VMHandle.from_dict(saved.get(record.id).handle or {})
        sock = get_backend("qemu-tcg").connect_agent(handle, timeout=30)
        future = time.time() + 86_400 * 400
        with AgentClient.connect(sock, hello_timeout=30, now=future) as again:
            guest_now = int(again.exec(["date", "+%s"], timeout_s=60).stdout)
        assert abs(guest_now - future) < 30
    finally:
        saved.delete(record.id)


def test_two_restores_differ_in_randomness_and_files(saved: VMRegistry, guest_install: Any) -> None:
    first, second = new_record(saved, guest_install), new_record(saved, guest_install)
    try:
        _, a, _ = start(saved, first)
        _, b, _ = start(saved, second)
        with a, b:
            read = ["sh", "-c", "cat /proc/sys/kernel/random/uuid; head -c16 /dev/urandom | od -x"]
            out_a = a.exec(read, timeout_s=60).stdout
            out_b = b.exec(read, timeout_s=60).stdout
            assert out_a and out_b and out_a != out_b
            uuid_a, uuid_b = out_a.splitlines()[0], out_b.splitlines()[0]
            assert uuid_a != uuid_b
            write = ["sh", "-c", "echo only-in-a > /root/mine && sync"]
            assert a.exec(write, timeout_s=60).exit_code == 0
            look = b.exec(["sh", "-c", "ls /root/mine"], timeout_s=60)
            assert look.exit_code != 0, look.stdout
    finally:
        saved.delete(first.id)
        saved.delete(second.id)


def test_disk_of_a_restored_guest_stays_consistent(
    saved: VMRegistry, guest_install: Any, tmp_path: Path
) -> None:
    if shutil.which("e2fsck") is None or shutil.which("qemu-img") is None:
        pytest.skip("e2fsck and qemu-img are needed to check the guest's filesystem")
    record = new_record(saved, guest_install, ephemeral=False)  # keeps its disk after exit
    try:
        mode, client, _ = start(saved, record)
        assert mode == "restore"
        script = (
            "mkdir -p /root/tree && for i in $(seq 1 200); do echo line $i > /root/tree/f$i; done"
            " && dd if=/dev/urandom of=/root/big bs=64k count=64 2>/dev/null"
            " && rm /root/tree/f1* && cat /root/tree/f99 && sync"
        )
        result = client.exec(["sh", "-c", script], timeout_s=120)
        assert (result.exit_code, result.stdout) == (0, b"line 99\n"), result.stderr
        client.shutdown()
        overlay = saved.dir(record.id) / "overlay.qcow2"
        deadline = time.monotonic() + 30
        while saved.get(record.id).handle and time.monotonic() < deadline:
            saved.reap()  # the guest powers off; its VMM exits
            time.sleep(0.2)
        saved.kill(record.id, "test done")
        raw = tmp_path / "root.raw"
        subprocess.run(
            ["qemu-img", "convert", "-O", "raw", str(overlay), str(raw)],
            check=True,
            capture_output=True,
        )
        fsck = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        listing = subprocess.run(
            ["debugfs", "-R", "cat /root/tree/f99", str(raw)], capture_output=True, text=True
        )
        assert listing.stdout == "line 99\n", listing.stderr
    finally:
        saved.delete(record.id)


def test_saved_ram_lies_beside_the_state_and_holds_only_touched_pages(
    saved: VMRegistry, guest_install: Any
) -> None:
    record = new_record(saved, guest_install)
    key = warm.snapshot_key(record)
    saved.delete(record.id)  # only its key was needed
    assert key is not None
    directory = SnapshotStore().path(key)
    state, ram = (directory / STATE).stat(), (directory / RAM).stat()
    assert state.st_size < 1 << 20  # device state only: the RAM is not in the stream
    assert ram.st_size == record.memory_mib << 20
    # Sparse: the kernel, the agent and the page cache of a booted guest, not 512 MiB.
    assert 4 << 20 < ram.st_blocks * 512 < ram.st_size // 4
    with (directory / RAM).open("rb") as f:  # the guest kernel's banner is in its RAM
        assert b"Linux version 6.1" in f.read(64 << 20)


@pytest.mark.parametrize("damaged", [STATE, RAM])
def test_corrupted_snapshot_is_not_used_and_is_rebuilt(
    saved: VMRegistry, guest_install: Any, damaged: str
) -> None:
    record = new_record(saved, guest_install)
    key = warm.snapshot_key(record)
    assert key is not None
    path = SnapshotStore().path(key) / damaged
    offset = 4096 if damaged == STATE else 16 << 20  # in the state; in the kernel's RAM
    with path.open("r+b") as f:  # same size: only the digest can tell
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    try:
        mode, client, events = start(saved, record)
        client.close()
        assert mode == "cold"
        assert events == ["restore-failed", "saved"]  # the hash check runs as QEMU starts
        assert damaged in REASONS["restore-failed"]  # the reason names the damaged file
    finally:
        saved.delete(record.id)
    assert SnapshotStore().find(key) is not None  # rebuilt by that cold boot


def test_plan_and_run_show_the_boot_mode(saved: VMRegistry) -> None:
    run = pyro("run", "--json", "debian:12", "--", "true")
    assert run.returncode == 0, run.stderr
    boot = next(s for s in json.loads(run.stdout)["steps"] if s["id"] == "boot")
    assert boot["message"].endswith("(qemu-tcg, restore)")
    cold = pyro("run", "--json", "--cold", "debian:12", "--", "true")
    assert cold.returncode == 0, cold.stderr
    boot = next(s for s in json.loads(cold.stdout)["steps"] if s["id"] == "boot")
    assert boot["message"].endswith("(qemu-tcg, cold)")
    text = pyro("run", "debian:12", "--", "true")
    assert "phase=snapshot" not in text.stderr  # restored: nothing to save


def test_plan_text_says_restore_or_cold(saved: VMRegistry, tmp_path: Path) -> None:
    spec = tmp_path / "run.yaml"
    spec.write_text(
        "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: t}\n"
        "spec:\n  environment: debian:12\n  steps: [{name: hi, run: 'true'}]\n"
    )
    warm_plan = pyro("plan", str(spec))
    assert warm_plan.returncode == 0, warm_plan.stderr
    assert "restore" in warm_plan.stdout, warm_plan.stdout
    cold_plan = pyro("plan", str(spec), env={"PYRO_WARM": "0"})
    assert "cold" in cold_plan.stdout and "restore" not in cold_plan.stdout, cold_plan.stdout


def test_a_save_in_progress_elsewhere_neither_blocks_nor_is_duplicated(
    saved: VMRegistry, guest_install: Any
) -> None:
    record = new_record(saved, guest_install)
    key = warm.snapshot_key(record)
    assert key is not None
    store = SnapshotStore()
    store.discard(key)
    try:
        with store.creating(key) as work:  # as if another run were saving right now
            assert work is not None
            mode, client, events = start(saved, record)
            client.close()
        assert (mode, events) == ("cold", ["missing"])  # booted at once, saved nothing
        assert store.find(key) is None
    finally:
        saved.delete(record.id)


def test_concurrent_runs_share_the_store(saved: VMRegistry, guest_install: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    probe = new_record(saved, guest_install)  # never started: only its key matters
    key = warm.snapshot_key(probe)
    saved.delete(probe.id)
    assert key is not None
    SnapshotStore().discard(key)  # all four start without a snapshot

    def one(_: int) -> subprocess.CompletedProcess[str]:
        return pyro("run", "--json", "debian:12", "--", "cat /proc/sys/kernel/random/uuid")

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(one, range(4)))
    assert all(p.returncode == 0 for p in done), [p.stderr for p in done]
    outputs = [json.loads(p.stdout)["steps"] for p in done]
    uuids = {next(s["stdout"] for s in steps if s["action"] == "exec") for steps in outputs}
    assert len(uuids) == 4 and "" not in uuids
    assert SnapshotStore().find(key) is not None  # one of them saved it, validly
