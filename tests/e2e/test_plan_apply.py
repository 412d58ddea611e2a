"""Saved plans on real guests: apply reads only the plan (QEMU microvm under TCG here).

A plan written by ``pyro plan --json`` applies from any working directory with the same
result as applying its spec, and on "another machine": a cache of its own holding the same
kernel and rootfs bytes under another install (another manifest digest); what it pinned
and changed since is refused before anything boots.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.guest

PYRO = [sys.executable, "-m", "pyro.cli"]

SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: saved}
spec:
  environment: "debian:12"
  files: [{source: in, target: /workspace/in}]
  steps:
    - {name: hash, run: "sha256sum in/data.bin > out.txt && cat out.txt", cwd: /workspace}
  artifacts: [{source: /workspace/out.txt, target: out/}]
"""


def pyro(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )


def project(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "project"
    (folder / "in").mkdir(parents=True)
    data = os.urandom(1 << 20)
    (folder / "in" / "data.bin").write_bytes(data)
    (folder / "spec.yaml").write_text(SPEC)
    return folder, hashlib.sha256(data).hexdigest()


def save_plan(folder: Path, env: dict[str, str] | None = None) -> Path:
    planned = pyro("plan", "--json", "spec.yaml", cwd=folder, env=env)
    assert planned.returncode == 0, planned.stderr
    saved = folder.parent / "plan.json"
    saved.write_text(planned.stdout)
    return saved


def exec_outputs(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["id"], s["status"], s["stdout"]) for s in result["steps"] if s["action"] == "exec"]


def test_a_saved_plan_applies_from_another_directory_like_its_spec(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    folder, digest = project(tmp_path)
    saved = save_plan(folder)

    direct = pyro("apply", "--json", "spec.yaml", cwd=folder)
    assert direct.returncode == 0, direct.stderr
    (folder / "out" / "out.txt").unlink()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    applied = pyro("apply", "--json", os.path.relpath(saved, elsewhere), cwd=elsewhere)
    assert applied.returncode == 0, applied.stderr
    assert exec_outputs(json.loads(applied.stdout)) == exec_outputs(json.loads(direct.stdout))
    assert (folder / "out" / "out.txt").read_text().split()[0] == digest
    assert list(elsewhere.iterdir()) == []  # nothing read from or written to the cwd

    # A copy-in source changed since the plan was made: refused, nothing boots.
    (folder / "in" / "data.bin").write_bytes(b"changed")
    stale = pyro("apply", str(saved), cwd=elsewhere)
    assert stale.returncode == 125  # pyro refused: outside the guest's exit codes
    assert "error: copy-in source 'in'" in stale.stderr and "changed" in stale.stderr
    assert "hint: make a new plan with 'pyro plan FILE --json'" in stale.stderr
    assert "[run] phase=create" not in stale.stderr


def test_a_plan_applies_on_another_machine_with_the_same_environment_bytes(
    guest_install: Any, pyro_state: Path, tmp_path: Path
) -> None:
    """The other machine's cache holds the same kernel and rootfs, installed as a pull from
    another registry would (another manifest, so another install digest); it builds its own
    guest agent from the same sources."""
    from pyro.environments.cache.store import Cache

    folder, digest = project(tmp_path)
    saved = save_plan(folder, env={**os.environ, "PYRO_WARM": "0"})

    staged = tmp_path / "staged"
    staged.mkdir()
    for path in (guest_install.kernel, guest_install.rootfs):
        subprocess.run(["cp", "--sparse=always", str(path), str(staged / path.name)], check=True)
    artifacts = guest_install.manifest["artifacts"]
    other = Cache(tmp_path / "other-cache")
    there = other.install(
        "debian:12",
        staged,
        {
            "version": guest_install.version,
            "defaults": guest_install.manifest.get("defaults"),
            "source": "oci://registry.example/pyro/debian:12@sha256:" + "e" * 64,
        },
        digests={entry["file"]: entry["sha256"] for entry in artifacts.values()},
    )
    assert there.digest != guest_install.digest
    assert there.content_digest == guest_install.content_digest

    env = {**os.environ, "PYRO_CACHE_DIR": str(other.root)}
    applied = pyro("apply", "--json", "--cold", str(saved), cwd=tmp_path, env=env)
    assert applied.returncode == 0, applied.stderr
    result = json.loads(applied.stdout)
    assert result["ok"] and result["environment_digest"] == there.content_digest
    assert (folder / "out" / "out.txt").read_text().split()[0] == digest

    # Other bytes under the same name there: the plan is stale, and says so (nothing boots,
    # so the bytes need not be a guest).
    shutil.rmtree(other.root / "environments")
    (staged / "vmlinux").write_bytes(b"another kernel")
    (staged / "rootfs.ext4").write_bytes(b"another rootfs")
    other.install("debian:12", staged, {"version": guest_install.version})
    stale = pyro("apply", "--cold", str(saved), cwd=tmp_path, env=env)
    assert stale.returncode == 125  # pyro refused: outside the guest's exit codes
    assert "error: environment debian:12 now holds other content" in stale.stderr
    assert "[run] phase=create" not in stale.stderr
