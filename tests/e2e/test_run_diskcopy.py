"""A run's ``files:`` by the VM's spare disk (pyro.machines.pushdisk) on real guests: the
plan carries the decision, the guest gets what the agent path gives it (contents, modes,
new parent folders 0755, files through links inside the spec's folder), on a cold boot
and on a restored saved guest (whose device set has the spare)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]
BY_DISK = {"PYRO_DATA_DISK_MIN_BYTES": "0"}
BY_AGENT = {"PYRO_DATA_DISK_MIN_BYTES": str(1 << 40)}
SPEC = """
apiVersion: pyro/v1
kind: Run
metadata: {name: diskcopy}
spec:
  environment: "debian:12"
  timeoutSeconds: 300
  files:
    - {source: tree, target: /opt/new/tree}
    - {source: one.txt, target: /workspace/}
  steps:
    - name: list
      run: >-
        cd /opt && find . \\( -type l -printf '%p %y\\n' \\) -o -printf '%p %y %m %u %g\\n'
        | sort && find . -type f -exec sha256sum {} + | sort -k 2 && ls -l /workspace/one.txt
        | cut -d' ' -f1,3,4 && cat /workspace/one.txt && dmesg | grep -c 'capacity change' || true
"""


def pyro(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def _spec(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(tree / "sub" / "run.sh", 0o750)
    (tree / "blob").write_bytes(os.urandom(2 << 20))
    os.chmod(tree / "blob", 0o600)
    os.symlink("sub/run.sh", tree / "link")  # inside: copied as the file it points to
    os.mkfifo(tree / "fifo")  # skipped on both paths
    (tmp_path / "one.txt").write_text("one\n")
    spec = tmp_path / "run.yaml"
    spec.write_text(SPEC)
    return spec


def _apply(spec: Path, env: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    proc = pyro("apply", "--json", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    step = next(s for s in result["steps"] if s["id"] == "exec.list")
    return step["stdout"].splitlines(), result


def test_files_by_disk_are_the_files_by_agent_cold_and_restored(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    spec = _spec(tmp_path)
    plan = json.loads(pyro("plan", "--json", str(spec), env=BY_DISK).stdout)
    ways = {s["id"]: s["by"] for s in plan["steps"] if s["action"] == "copy-in"}
    assert ways == {"copy-in.0": "disk", "copy-in.1": "disk"}
    plan = json.loads(pyro("plan", "--json", str(spec), env=BY_AGENT).stdout)
    assert {s["by"] for s in plan["steps"] if s["action"] == "copy-in"} == {"agent"}

    by_agent, _ = _apply(spec, {**BY_AGENT, "PYRO_WARM": "0"})
    cold, _ = _apply(spec, {**BY_DISK, "PYRO_WARM": "0"})
    assert by_agent[-1] == "0" and cold[-1] == "4"  # two swaps in, two back, by disk only
    assert cold[:-1] == by_agent[:-1]
    assert "./new d 755 root root" in cold  # a missing parent, as the agent makes it
    assert "./new/tree/sub/run.sh f 750 root root" in cold
    assert "./new/tree/link f 750 root root" in cold  # the link's file, not a link
    assert "./new/tree/blob f 600 root root" in cold
    assert not any("fifo" in line for line in cold)
    assert cold[-3:-1] == ["-rw-r--r-- root root", "one"]

    # Warm: the first run saves a ready guest (with its spare), later ones restore it.
    for _ in range(3):
        warm, result = _apply(spec, BY_DISK)
        assert warm[:-1] == by_agent[:-1] and warm[-1] == "4"
        boot = next(s for s in result["steps"] if s["id"] == "boot")
        if boot["message"].endswith("restore)"):
            break
    else:
        pytest.fail("no run restored a saved guest")

    # By default (the measured rule) only a cold boot takes the disk: a restored guest
    # took the agent path as fast (docs/performance.md).
    plan = json.loads(pyro("plan", "--json", str(spec), env={}).stdout)
    mode = next(s["mode"] for s in plan["steps"] if s["id"] == "boot")
    ways = {s["by"] for s in plan["steps"] if s["action"] == "copy-in"}
    assert ways == {"agent" if mode == "restore" else "disk"}
