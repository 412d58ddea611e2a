"""A hostile guest against the host's own resources, on real guests (debian:12, QEMU/TCG):
a console flood, allowlist relays that would outlive their VM, and the state folder that
other local users must not read. Every pyro step is a fresh CLI process; every network
connection stays on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = [pytest.mark.guest, pytest.mark.hostile]

PYRO = [sys.executable, "-m", "pyro.cli"]
#: A small bound, so that a flood of a few MB under TCG is many times the bound.
SERIAL_CAP = 64 * 1024


def pyro(*args: str, umask: int | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        umask=-1 if umask is None else umask,
    )


def ok(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = pyro(*args, **kwargs)
    assert proc.returncode == 0, f"pyro {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


# -- the serial console ------------------------------------------------------------------


def test_a_console_flood_leaves_a_bounded_log_that_still_shows_the_last_lines(
    guest_install: Any, pyro_state: Path
) -> None:
    cap = {"PYRO_SERIAL_LOG_MAX_BYTES": str(SERIAL_CAP)}  # the VMM's, set when it starts
    task_id = json.loads(ok("task", "create", "debian:12", "--json", **cap).stdout)["task"]["id"]
    try:
        flooded(task_id, pyro_state)
    finally:
        pyro("task", "delete", task_id)


def flooded(task_id: str, pyro_state: Path) -> None:
    flood = (
        "head -c 3000000 /dev/zero | tr '\\0' x > /dev/ttyS0; "
        "echo > /dev/ttyS0; echo LAST-LINE-1 > /dev/ttyS0; echo LAST-LINE-2 > /dev/ttyS0"
    )
    ok("task", "exec", task_id, "--", "sh", "-c", flood)
    log = pyro_state / "vms" / task_id / "serial.log"
    # The guest's tty may still be sending its last bytes when the exec returns.
    deadline = time.monotonic() + 60
    while b"LAST-LINE-2" not in log.read_bytes():
        assert time.monotonic() < deadline, "the last console lines never reached serial.log"
        time.sleep(0.05)
    data = log.read_bytes()
    # Right after the exec: no pyro command came by to trim it, yet it is within the bound.
    assert len(data) <= SERIAL_CAP, f"serial.log is {len(data)} bytes"
    (dropped,) = re.findall(rb"trimmed, (\d+) bytes", data)[-1:]
    assert int(dropped) >= 3_000_000 - SERIAL_CAP
    shown = ok("vm", "logs", task_id, "--tail", "2").stdout.splitlines()
    assert shown == ["LAST-LINE-1", "LAST-LINE-2"], shown
    # Once the VM is stopped, the last output is still there.
    ok("task", "stop", task_id)
    assert "LAST-LINE-2" in ok("vm", "logs", task_id, "--tail", "5").stdout
    assert log.stat().st_size <= SERIAL_CAP


# -- the state folder ---------------------------------------------------------------------


def open_to_others(state: Path) -> list[str]:
    """Everything under ``state`` that another local user could read, enter or write."""
    found = []
    for path in [state, *state.rglob("*")]:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            bad = mode != 0o700
        elif stat.S_ISREG(info.st_mode):
            bad = mode != 0o600
        else:  # sockets
            bad = bool(mode & 0o077)
        if bad:
            found.append(f"{path.relative_to(state.parent)} {oct(mode)}")
    return found


def test_state_stays_private_through_a_vm_and_task_lifecycle(
    guest_install: Any, pyro_state: Path
) -> None:
    lax = 0  # umask 0: whatever pyro does not restrict itself comes out world-writable
    task = json.loads(
        ok("task", "create", "debian:12", "--json", "--secret", "TOKEN=s3cr3t", umask=lax).stdout
    )["task"]["id"]
    vm = None
    try:
        ok("task", "exec", task, "--secret-env", "TOKEN", "--", "echo", "hi", umask=lax)
        created = ok("vm", "create", "debian:12", "--start", "--json", umask=lax)
        vm = json.loads(created.stdout)["vm"]["id"]
        running = open_to_others(pyro_state)  # VMMs, sockets, consoles and records live
        ok("vm", "stop", vm, umask=lax)
        ok("task", "stop", task, umask=lax)
        stopped = open_to_others(pyro_state)
        assert running == [] and stopped == [], running + stopped
    finally:
        if vm is not None:
            pyro("vm", "delete", vm)
        pyro("task", "delete", task)
    locks = pyro_state / "locks"
    left = sorted(p.name for p in locks.iterdir()) if locks.exists() else []
    assert left == [], f"lock files of deleted VMs and tasks: {left}"


# -- allowlist relays -------------------------------------------------------------------------


class Sink:
    """A loopback destination that accepts, reads a little, and never closes."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.got = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)
            if conn.recv(64):
                self.got.set()

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def relays_to(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if any(a.endswith("relay.py") for a in args) and args[-1:] == [str(port)]:
            found.append(proc)
    return found


SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {{name: relay}}
spec:
  environment: debian:12
  timeoutSeconds: 600
  network: {{policy: allowlist, allow: ["127.0.0.1:{port}"]}}
  steps:
    - name: hold
      run: 'bash -c "exec 3<>/dev/tcp/10.0.2.2/{port}; echo hello >&3; sleep 600"'
"""


def test_relays_do_not_outlive_a_killed_owner(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    sink = Sink()
    spec = tmp_path / "relay.yaml"
    spec.write_text(SPEC.format(port=sink.port))
    owner = subprocess.Popen(
        [*PYRO, "apply", str(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert sink.got.wait(240), "the guest never reached the allowed destination"
        relays = relays_to(sink.port)
        assert relays, "no relay carries the connection"
        owner.kill()  # kill -9 of pyro while a relay holds a connection that never closes
        owner.wait()
        ok("vm", "list")  # the next pyro command reaps what is left
        _, alive = psutil.wait_procs(relays, timeout=30)
        assert not alive, f"relays outlived their VM: {[p.pid for p in alive]}"
        assert relays_to(sink.port) == []
    finally:
        owner.kill()
        owner.wait()
        for proc in relays_to(sink.port):
            proc.kill()
        sink.close()


# 127.1 is 127.0.0.1 as the kernel reads it: the guest reaches it at 10.0.2.2 too.
@pytest.mark.parametrize("address", ["127.0.0.1", "127.1"])
def test_relays_end_when_their_vm_is_deleted(
    guest_install: Any, pyro_state: Path, address: str
) -> None:
    from pyro.guest.build import build_agent_initrd
    from pyro.machines.registry import VMRegistry

    sink = Sink()
    registry = VMRegistry(pyro_state)
    record = registry.create(
        environment="debian:12",
        environment_digest=guest_install.digest,
        kernel=guest_install.kernel,
        initrd=build_agent_initrd(),
        rootfs=guest_install.rootfs,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=256,
        ephemeral=True,
        network={"policy": "allowlist", "allow": [f"{address}:{sink.port}"]},
    )
    try:
        _, client = registry.start(record.id)
        with client:
            script = f"exec 3<>/dev/tcp/10.0.2.2/{sink.port}; echo hello >&3; exec 3>&-"
            result = client.exec(["bash", "-c", script], timeout_s=60)
            assert result.exit_code == 0, result.stderr
        assert sink.got.wait(60)
        relays = relays_to(sink.port)
        assert relays  # the guest closed its end; the destination never closes
        registry.delete(record.id)
        _, alive = psutil.wait_procs(relays, timeout=30)
        assert not alive, f"relays outlived their VM: {[p.pid for p in alive]}"
    finally:
        registry.delete(record.id)
        for proc in relays_to(sink.port):
            proc.kill()
        sink.close()
