"""VMHandle serialisation, PID-reuse protection and short socket paths."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pyro.errors import VMMError
from pyro.vmm.base import VMHandle, kill_vmm, process_start, vmm_process
from pyro.vmm.launch import connect_unix


def _handle(**changes: object) -> VMHandle:
    fields: dict[str, object] = {
        "vm_id": "vm-7",
        "backend": "qemu-tcg",
        "pid": 12345,
        "workdir": Path("/state/vms/vm-7"),
        "agent_endpoint": "agent.sock",
        "started_at": 1.5,
        "start_ticks": 1.25,
        "extra": {"k": "v"},
    }
    fields.update(changes)
    return VMHandle(**fields)  # type: ignore[arg-type]


def test_handle_round_trips_through_json() -> None:
    handle = _handle()
    assert VMHandle.from_dict(json.loads(json.dumps(handle.to_dict()))) == handle


def test_malformed_handle_is_a_vmm_error() -> None:
    data = _handle().to_dict()
    del data["pid"]
    with pytest.raises(VMMError, match="malformed"):
        VMHandle.from_dict(data)


def test_process_without_the_vm_id_is_not_ours() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        created = process_start(proc.pid)
        stranger = _handle(pid=proc.pid, start_ticks=created)
        assert vmm_process(stranger) is None
        kill_vmm(stranger)  # must leave the unrelated process alone
        assert proc.poll() is None
        ours = _handle(pid=proc.pid, start_ticks=created, extra={"cmdline_tag": "30"})
        assert vmm_process(ours) is not None
        kill_vmm(ours)
        assert proc.poll() is not None
    finally:
        proc.kill()
        proc.wait()


def test_connect_unix_uses_a_short_path(tmp_path: Path) -> None:
    import socket

    deep = tmp_path / ("a" * 100) / ("b" * 100)
    deep.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    try:
        os.chdir(deep)  # bind relatively, the way the VMMs do
        server.bind("s.sock")
    finally:
        os.chdir(cwd)
    server.listen(1)
    try:
        client = connect_unix(deep, "s.sock", timeout=2)
        conn, _ = server.accept()
        client.sendall(b"hi")
        assert conn.recv(2) == b"hi"
        client.close()
        conn.close()
    finally:
        server.close()
