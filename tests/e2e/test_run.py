"""`pyro run` / `pyro apply` / `pyro vm` on real guests (QEMU microvm under TCG here)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.guest import vmm_processes
from helpers.procs import wait_until_open

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]


def pyro(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def run_until_executing(command: str, **kwargs: Any) -> subprocess.Popen[str]:
    """``pyro run debian:12 -- COMMAND`` started, returned once its command is running."""
    child = subprocess.Popen(
        [*PYRO, "run", "debian:12", "--", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    assert child.stderr is not None
    for line in child.stderr:
        if "phase=execute" in line:
            break
    return child


def test_git_version_with_phase_markers(guest_install: Any, pyro_state: Path) -> None:
    proc = pyro("run", "debian:12", "--", "git", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("git version 2.39"), proc.stdout
    for marker in (
        "[run] phase=create environment=debian:12",
        "[run] phase=start vm_id=",
        "[run] phase=execute vm_id=",
        "[run] phase=cleanup vm_id=",
    ):
        assert marker in proc.stderr, proc.stderr
    assert "[run] environment=debian:12 backend=qemu-tcg exit_code=0 duration_ms=" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_exit_code_and_streams_kept_apart(guest_install: Any, pyro_state: Path) -> None:
    proc = pyro("run", "debian:12", "--", "echo out; echo err >&2; exit 7")
    assert proc.returncode == 7
    assert proc.stdout == "out\n"
    assert "err\n" in proc.stderr and "out" not in proc.stderr


def test_json_output_is_one_document_without_markers(guest_install: Any, pyro_state: Path) -> None:
    proc = pyro("run", "--json", "debian:12", "--", "uname", "-s")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["exit_code"] == 0
    assert result["backend"] == "qemu-tcg"
    (step,) = [s for s in result["steps"] if s["action"] == "exec"]
    assert step["stdout"] == "Linux\n"
    assert "[run]" not in proc.stdout and "[run]" not in proc.stderr


def test_flood_is_capped_and_host_stays_small(guest_install: Any, pyro_state: Path) -> None:
    cmd = [*PYRO, "run", "--json", "debian:12", "--", "head -c 50000000 /dev/zero | tr '\\0' a"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0]
    proc = psutil.Process(child.pid)

    def watch() -> None:  # sample pyro's RSS while the main thread drains its pipes
        while child.poll() is None:
            try:
                peaks[0] = max(peaks[0], proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = child.communicate(timeout=300)
    watcher.join()
    peak = peaks[0]
    assert child.returncode == 0, err
    (step,) = [s for s in json.loads(out)["steps"] if s["action"] == "exec"]
    assert step["stdout_truncated"] is True
    assert len(step["stdout"]) == 1 << 20
    assert peak < 250 * (1 << 20), f"pyro's RSS peaked at {peak >> 20} MiB for a 50 MB flood"


def test_timeout_kills_command_and_keeps_partial_output(
    guest_install: Any, pyro_state: Path
) -> None:
    proc = pyro("run", "--timeout-seconds", "8", "debian:12", "--", "echo before; sleep 1000")
    assert proc.returncode == 124, proc.stderr
    assert proc.stdout == "before\n"
    assert "status=timed-out" in proc.stderr


def test_apply_copies_100mb_in_and_out_with_env_and_cwd(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    payload = os.urandom(100 * (1 << 20))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "blob.bin").write_bytes(payload)
    spec = tmp_path / "copy.yaml"
    spec.write_text(
        """
apiVersion: pyro/v1
kind: Run
metadata: {name: copy}
spec:
  environment: "debian:12"
  timeoutSeconds: 300
  env: {WHO: pyro}
  files: [{source: in, target: /workspace/in}]
  steps:
    - name: hash
      run: "sha256sum in/blob.bin > out.txt && echo $WHO-$(pwd) >> out.txt"
      cwd: /workspace
    - {name: copy, argv: [cp, /workspace/in/blob.bin, /workspace/blob.out]}
  artifacts:
    - {source: /workspace/out.txt, target: out/}
    - {source: /workspace/blob.out, target: out/blob.out}
"""
    )
    proc = pyro("apply", str(spec), "--junit", str(tmp_path / "junit.xml"))
    assert proc.returncode == 0, proc.stderr
    digest = hashlib.sha256(payload).hexdigest()
    lines = (tmp_path / "out" / "out.txt").read_text().splitlines()
    assert lines[0].split()[0] == digest
    assert lines[1] == "pyro-/workspace"
    assert hashlib.sha256((tmp_path / "out" / "blob.out").read_bytes()).hexdigest() == digest
    junit = (tmp_path / "junit.xml").read_text()
    assert 'tests="2"' in junit and 'failures="0"' in junit


def test_failed_step_stops_the_run_and_names_the_step(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text(
        """
apiVersion: pyro/v1
kind: Run
metadata: {name: fail}
spec:
  environment: "debian:12"
  steps:
    - {name: soft, run: "exit 3", continueOnError: true}
    - {name: hard, run: "exit 5"}
    - {name: never, run: "echo never"}
"""
    )
    proc = pyro("apply", "--json", str(spec))
    assert proc.returncode == 5
    result = json.loads(proc.stdout)
    assert result["failed_step"] == "exec.hard"
    statuses = {s["id"]: s["status"] for s in result["steps"]}
    assert statuses["exec.soft"] == "failed"
    assert statuses["exec.never"] == "skipped"


def test_agent_never_ready_is_a_clear_error_and_nothing_leaks(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    from pyro.errors import BootError
    from pyro.machines.registry import VMRegistry

    broken = tmp_path / "broken.cpio"
    broken.write_bytes(b"this is not an initramfs")
    registry = VMRegistry(pyro_state)
    record = registry.create(
        environment="debian:12",
        environment_digest=guest_install.digest,
        kernel=guest_install.kernel,
        initrd=broken,
        rootfs=guest_install.rootfs,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=256,
    )
    with pytest.raises(BootError) as caught:
        registry.start(record.id, boot_timeout=15)
    assert "did not become ready" in caught.value.summary
    assert registry.get(record.id).state == "stopped"
    assert not vmm_processes(str(pyro_state))
    registry.delete(record.id)


def test_kill_9_mid_run_is_reaped_by_the_next_command(guest_install: Any, pyro_state: Path) -> None:
    child = run_until_executing("sleep 600")
    child.send_signal(signal.SIGKILL)
    child.communicate()
    proc = pyro("vm", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["vms"] == []
    deadline = time.monotonic() + 10
    while vmm_processes(str(pyro_state)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not vmm_processes(str(pyro_state))
    assert not list((pyro_state / "vms").iterdir())


def test_four_concurrent_runs_all_succeed(guest_install: Any, pyro_state: Path) -> None:
    results: list[subprocess.CompletedProcess[str]] = []

    def one(i: int) -> None:
        results.append(pyro("run", "debian:12", "--", f"echo run-{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.stdout for r in results) == [f"run-{i}\n" for i in range(4)]
    assert all(r.returncode == 0 for r in results)


def test_a_running_command_holds_no_start_slot(guest_install: Any, pyro_state: Path) -> None:
    from pyro.host.startslots import acquire

    child = run_until_executing("sleep 3; echo done", env={**os.environ, "PYRO_START_SLOTS": "1"})
    try:
        # The run's only slot was given back when its guest was ready.
        slot = acquire(slots=1, directory=pyro_state / "start-slots", wait_s=0)
        assert slot.held
        slot.release()
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0, err
    assert out == "done\n"


def test_a_run_waits_for_a_start_slot_then_goes_ahead(guest_install: Any, pyro_state: Path) -> None:
    from pyro.host.startslots import WAIT_S, acquire

    env = {**os.environ, "PYRO_START_SLOTS": "1"}
    held = acquire(slots=1, directory=pyro_state / "start-slots")
    assert held.held
    try:
        stuck = pyro("run", "debian:12", "--", "echo went-ahead", env=env)
        child = subprocess.Popen(
            [*PYRO, "run", "debian:12", "--", "echo waited"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert wait_until_open(child.pid, pyro_state / "start-slots")
            held.release()  # while the run waits for it
            out, err = child.communicate(timeout=120)
        finally:
            child.kill()
            child.wait()
    finally:
        held.release()
    assert stuck.returncode == 0 and stuck.stdout == "went-ahead\n", stuck.stderr
    went_ahead = re.search(
        r"\[run\] phase=start-slot waited_ms=(\d+) status=none-free", stuck.stderr
    )
    assert went_ahead and int(went_ahead[1]) >= WAIT_S * 1000, stuck.stderr
    assert child.returncode == 0 and out == "waited\n", err
    assert re.search(r"\[run\] phase=start-slot waited_ms=\d+ status=held", err)


def test_a_bad_start_slot_count_is_a_clear_error(guest_install: Any, pyro_state: Path) -> None:
    proc = pyro("run", "debian:12", "--", "true", env={**os.environ, "PYRO_START_SLOTS": "lots"})
    assert proc.returncode == 125
    assert "error: PYRO_START_SLOTS='lots' is not a number of start slots" in proc.stderr
    assert "hint: set PYRO_START_SLOTS to a whole number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_vm_lifecycle_and_exec_auto_deletes(guest_install: Any, pyro_state: Path) -> None:
    created = json.loads(pyro("vm", "create", "debian:12", "--json").stdout)["vm"]
    vm_id = created["id"]
    assert created["state"] == "created"
    started = pyro("vm", "start", vm_id, "--json")
    assert json.loads(started.stdout)["vm"]["state"] == "running", started.stderr
    status = json.loads(pyro("vm", "status", vm_id, "--json").stdout)["vm"]
    assert status["pid"] and status["backend"] == "qemu-tcg"
    assert "pyro-agent: ready" in pyro("vm", "logs", vm_id).stdout
    ran = pyro("vm", "exec", vm_id, "--", "cat /etc/debian_version; exit 4")
    assert ran.returncode == 4 and ran.stdout.startswith("12.")
    gone = pyro("vm", "status", vm_id)
    assert gone.returncode == 1 and "no VM" in gone.stderr


def test_exit_codes_keep_the_guest_s_apart_from_pyro_s(
    guest_install: Any, pyro_state: Path
) -> None:
    """The guest's 3, 126 and 127 pass through; pyro's own failure is 125, not 1/2/3."""
    assert pyro("run", "debian:12", "--", "sh -c 'exit 3'").returncode == 3
    missing = pyro("run", "debian:12", "--", "no-such-command")
    assert missing.returncode == 127, missing.stderr
    denied = pyro("run", "debian:12", "--", "/etc/hostname")
    assert denied.returncode == 126, denied.stderr
    unknown = pyro("run", "no-such-env:1", "--", "true")
    assert unknown.returncode == 125 and unknown.stderr.startswith("error: ")
