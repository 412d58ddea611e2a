"""Guest-to-host copies from a hostile guest, through a booted guest and its real agent
(issue #17, items 1 and 6): ``task export`` and run ``artifacts``.

The guest makes what a hostile guest would: a link to a host folder, links it later swaps
for folders, names that are not UTF-8, setuid files, FIFOs, a 1 GiB sparse file with four
hard links (5 GiB to write on the host from a few KiB of guest disk), a link to
/dev/urandom as an artifact.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.guest, pytest.mark.hostile, pytest.mark.slow]

P3_BAD = r"$(printf 'p3\200')"  # b"p3\x80": not UTF-8
P3_FFFD = r"$(printf 'p3\357\277\275')"  # what b"p3\x80" became with errors="replace"
SPARSE = "truncate -s 1G big && for i in 1 2 3 4; do ln big h$i; done"


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_task_export_from_a_hostile_guest(
    tmp_path: Path, guest_install: Any, pyro_state: Path
) -> None:
    from pyro.errors import GuestPathError, LimitError
    from pyro.sdk import Pyro

    host_dir = tmp_path / "some-host-dir"
    host_dir.mkdir()
    out = tmp_path / "out"
    sdk = Pyro()
    task = sdk.create_task("debian:12")

    def sh(script: str) -> None:
        result = sdk.exec_task(task.id, ["sh", "-ec", script])
        assert result.exit_code == 0, result

    old_umask = os.umask(0o022)
    try:
        sh(
            "mkdir -p /workspace/e/sub && cd /workspace/e && echo data > sub/f"
            f" && ln -s {host_dir} ssh && ln -s sub inner && ln -s ../../../.. up"
            " && mkfifo fifo && printf '#!/bin/sh\\n' > hook && chmod 6777 hook"
            " && mkdir -p .git/hooks && cp hook .git/hooks/pre-commit"
            " && printf '[core]\\n\\tfsmonitor = \"touch pwned; false\"\\n' > .git/config"
        )
        first = sdk.export_task_path(task.id, "/workspace/e", out)

        assert sorted(first.skipped) == [f"/workspace/e/{n}" for n in (".git", "fifo", "ssh", "up")]
        assert everything(out) == ["hook", "inner", "sub", "sub/f"]
        assert os.readlink(out / "inner") == "sub"
        assert stat.S_IMODE((out / "hook").stat().st_mode) == 0o755

        # The guest swaps its links for folders; an export by an older pyro left ssh -> host.
        (out / "ssh").symlink_to(host_dir)
        sh(
            "cd /workspace/e && rm ssh inner && mkdir ssh inner"
            " && echo key > ssh/authorized_keys && echo x > inner/planted"
        )
        sdk.export_task_path(task.id, "/workspace/e", out)

        assert list(host_dir.iterdir()) == []
        assert everything(out / "sub") == ["f"]
        assert (out / "ssh" / "authorized_keys").read_text() == "key\n"
        assert not any(p.is_symlink() for p in out.rglob("*"))

        sh(
            f'mkdir -p /workspace/n && cd /workspace/n && ln -s {host_dir} "{P3_BAD}"'
            f' && mkdir "{P3_FFFD}" && echo key > "{P3_FFFD}/authorized_keys"'
        )
        with pytest.raises(GuestPathError, match="not valid UTF-8"):
            sdk.export_task_path(task.id, "/workspace/n", tmp_path / "n")
        assert not (tmp_path / "n").exists() and list(host_dir.iterdir()) == []

        sh(f"mkdir -p /workspace/s && cd /workspace/s && {SPARSE}")
        with pytest.raises(LimitError, match="more than 4 GiB") as info:
            sdk.export_task_path(task.id, "/workspace/s", tmp_path / "s")
        assert "PYRO_COPY_OUT_MAX_BYTES" in info.value.hint
        assert not (tmp_path / "s").exists()
    finally:
        os.umask(old_umask)
        sdk.delete_task(task.id)


SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {{name: hostile-artifacts}}
spec:
  environment: debian:12
  timeoutSeconds: 300
  steps:
    - name: plant
      run: >-
        mkdir -p /out /big /ok && ln -s /dev/urandom /out/rand
        && cd /big && {sparse} && echo fine > /ok/file && ln -s /etc/passwd /ok/passwd
        && mkdir -p /ok/.git/hooks && echo '[core]' > /ok/.git/config
  artifacts:
    - {{source: /out/rand, target: ./r}}
    - {{source: /big, target: ./big/}}
    - {{source: /ok, target: ./got/}}
"""


def test_artifacts_from_a_hostile_guest(
    tmp_path: Path, guest_install: Any, pyro_state: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    spec = project / "spec.yaml"
    spec.write_text(SPEC.format(sparse=SPARSE))

    proc = subprocess.run(
        [sys.executable, "-m", "pyro.cli", "apply", str(spec), "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )

    assert proc.returncode == 125, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    steps = [s for s in json.loads(proc.stdout)["steps"] if s["action"] == "copy-out"]
    assert [s["status"] for s in steps] == ["error", "error", "ok"], steps
    assert "is a symlink in the guest" in steps[0]["message"]
    assert "more than 4 GiB" in steps[1]["message"]
    assert steps[2]["message"] == (
        "1 file(s), 5 bytes, 2 skipped (symlinks, special files and git metadata are not copied)"
    )
    assert everything(project) == ["got", "got/ok", "got/ok/file", "spec.yaml"]
