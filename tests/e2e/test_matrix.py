"""``pyro apply`` of a matrix on real guests, here: instances over the start slots,
artifacts per instance, one JUnit suite each, the worst exit code, Ctrl-C leaves no VM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers.guest import vmm_processes

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]

SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: ci}
spec:
  environment: "debian:12"
  backend: qemu-tcg
  timeoutSeconds: 120
  matrix:
    word: [alpha, beta]
    shard: {range: 2}
  files: [{source: in.txt, target: /work/in.txt}]
  steps:
    - name: test
      run: >-
        mkdir -p /work/out &&
        echo "{{ vars.word }}-{{ vars.shard }} $(cat /work/in.txt)" > /work/out/r.txt &&
        test "{{ vars.word }}{{ vars.shard }}" != beta1 || exit 3
  artifacts: [{source: /work/out/r.txt, target: out/}]
"""


def pyro(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_a_matrix_runs_every_instance_and_merges_their_results(
    guest_install: object, pyro_state: Path, tmp_path: Path
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "in.txt").write_text("copied\n")
    done = pyro("apply", "spec.yaml", "--json", "--junit", "report.xml", cwd=tmp_path)
    assert done.returncode == 3, done.stderr  # the worst instance's exit code
    results = json.loads(done.stdout)
    names = sorted(result["name"] for result in results)
    assert names == [f"ci[word={w},shard={s}]" for w in ("alpha", "beta") for s in (0, 1)]
    failed = [r["name"] for r in results if not r["ok"]]
    assert failed == ["ci[word=beta,shard=1]"]
    assert len({r["plan_digest"] for r in results}) == 4
    for result in results:
        values = result["instance"]["values"]
        text = (tmp_path / "out" / result["name"] / "r.txt").read_text()
        assert text == f"{values['word']}-{values['shard']} copied\n"
    suites = ET.parse(tmp_path / "report.xml").getroot().findall("testsuite")
    assert sorted(s.get("name") for s in suites) == names
    assert sum(int(s.get("failures", "0")) for s in suites) == 1


def test_plan_shows_the_expansion(guest_install: object, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "in.txt").write_text("copied\n")
    done = pyro("plan", "spec.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("matrix: 4 instances of ci\n  ci[word=alpha,shard=0]  sha256:")
    plans = json.loads(pyro("plan", "spec.yaml", "--json", cwd=tmp_path).stdout)
    assert [p["metadata"]["name"] for p in plans][-1] == "ci[word=beta,shard=1]"


def test_ctrl_c_cancels_every_instance_and_leaves_no_vm(
    guest_install: object, pyro_state: Path, tmp_path: Path
) -> None:
    spec = SPEC.replace("steps:\n", "steps:\n    - {name: wait, run: 'sleep 600'}\n")
    (tmp_path / "spec.yaml").write_text(spec)
    (tmp_path / "in.txt").write_text("copied\n")
    env = {**os.environ, "PYRO_START_SLOTS": "2"}
    process = subprocess.Popen(
        [*PYRO, "apply", "spec.yaml"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(vmm_processes(str(pyro_state))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(vmm_processes(str(pyro_state))) == 2, "two instances never ran at once"
    time.sleep(1.0)  # the guests reach their command
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert vmm_processes(str(pyro_state)) == []
    vms = pyro_state / "vms"
    assert not vms.is_dir() or list(vms.iterdir()) == []
