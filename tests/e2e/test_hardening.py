"""Hardening on real guests: host paths stay inside their root, guest paths are not trusted,
QEMU runs sandboxed, resource caps hold (docs/security.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.guest import vmm_processes

pytestmark = [pytest.mark.guest]

PYRO = [sys.executable, "-m", "pyro.cli"]

SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {{name: hardening}}
spec:
  environment: debian:12
  timeoutSeconds: 120
{body}
"""


TRUE = '\n  steps: [{name: s, run: "true"}]'


def pyro(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRO, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )


def write_spec(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(body=body))
    return path


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("parent", "  files: [{source: ../secret.txt, target: /tmp/s}]" + TRUE),
        ("absolute", "  files: [{source: /etc/shadow, target: /tmp/s}]" + TRUE),
        ("symlink", "  files: [{source: ./link, target: /tmp/s}]" + TRUE),
        ("symlink-in-dir", "  files: [{source: ./tree, target: /tmp/t}]" + TRUE),
        (
            "artifact-parent",
            '  steps: [{name: s, run: "echo x > /tmp/o"}]\n'
            "  artifacts: [{source: /tmp/o, target: ../escaped.txt}]",
        ),
        (
            "artifact-symlinked-dir",
            '  steps: [{name: s, run: "echo x > /tmp/o"}]\n'
            "  artifacts: [{source: /tmp/o, target: ./outlink/escaped.txt}]",
        ),
    ],
)
def test_apply_refuses_host_paths_outside_the_spec_folder(
    name: str, body: str, tmp_path: Path, guest_install: Any, pyro_state: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "secret.txt").write_text("top secret\n")
    spec_dir = tmp_path / "project"
    spec_dir.mkdir()
    (spec_dir / "link").symlink_to(tmp_path / "secret.txt")
    (spec_dir / "tree").mkdir()
    (spec_dir / "tree" / "ok.txt").write_text("fine\n")
    (spec_dir / "tree" / "bad").symlink_to(tmp_path / "secret.txt")
    (spec_dir / "outlink").symlink_to(outside)
    spec = write_spec(spec_dir, body)

    proc = pyro("apply", str(spec), "--json", cwd=spec_dir)

    assert proc.returncode == 125, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    message = json.dumps(result)
    assert any(word in message for word in ("outside", "leaving", "escape", "relative to")), message
    assert "top secret" not in message
    assert not (tmp_path / "escaped.txt").exists()
    assert not (outside / "escaped.txt").exists()
    assert "Traceback" not in proc.stderr


def test_copy_out_does_not_follow_guest_symlinks_or_names(
    tmp_path: Path, guest_install: Any, pyro_state: Path
) -> None:
    steps = (
        "mkdir -p /out/sub && echo data > /out/sub/file.txt"
        " && ln -s /etc/passwd /out/passwd && ln -s / /out/rootlink"
        " && ln -s ../../../../../../tmp /out/sub/up && mkfifo /out/fifo"
    )
    spec = write_spec(
        tmp_path / "p",
        f'  steps: [{{name: s, run: "{steps}"}}]\n  artifacts: [{{source: /out, target: ./got/}}]',
    )

    proc = pyro("apply", str(spec), cwd=spec.parent)

    assert proc.returncode == 0, proc.stderr
    got = spec.parent / "got" / "out"
    assert (got / "sub" / "file.txt").read_text() == "data\n"
    everything = sorted(p.relative_to(got).as_posix() for p in got.rglob("*"))
    assert everything == ["sub", "sub/file.txt"], everything
    assert not any(p.is_symlink() for p in got.rglob("*"))


def test_qemu_runs_sandboxed(tmp_path: Path, guest_install: Any, pyro_state: Path) -> None:
    from pyro.sdk import Pyro

    sdk = Pyro()
    vm = sdk.create_vm("debian:12")
    try:
        sdk.start_vm(vm.id)
        (proc,) = vmm_processes(str(pyro_state))
        argv = proc.cmdline()
        sandbox = argv[argv.index("-sandbox") + 1].split(",")
        assert sandbox[0] == "on"
        assert {"obsolete=deny", "elevateprivileges=deny", "spawn=deny"} <= set(sandbox)
        # seccomp mode 2 (filter) is what -sandbox on installs.
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "Seccomp:\t2" in status
    finally:
        sdk.delete_vm(vm.id)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--vcpus", "100000"], "vcpus"),  # beyond what any spec may ask
        (["--vcpus", str((os.cpu_count() or 1) * 4 + 1)], "vcpus"),  # beyond this host
        (["--memory-mib", "100000000"], "memory"),
    ],
)
def test_resource_caps_refuse_before_booting(
    args: list[str], needle: str, tmp_path: Path, guest_install: Any, pyro_state: Path
) -> None:
    proc = pyro("run", "debian:12", *args, "--", "true", cwd=tmp_path)
    assert proc.returncode == 125, proc.stderr  # pyro refused: out of the guest's range
    assert needle in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert not vmm_processes(str(pyro_state))


def test_max_vms_cap(
    tmp_path: Path, guest_install: Any, pyro_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyro.errors import LimitError
    from pyro.sdk import Pyro

    monkeypatch.setenv("PYRO_MAX_VMS", "1")
    sdk = Pyro()
    vm = sdk.create_vm("debian:12")
    try:
        sdk.start_vm(vm.id)
        with pytest.raises(LimitError, match="limit is 1") as refused:
            sdk.create_vm("debian:12")
        assert "PYRO_MAX_VMS" in (refused.value.hint or "")
        result = sdk.run_in_vm("debian:12", "true")  # runs report errors in their result
        assert not result.ok and result.error is not None
        assert result.error["type"] == "LimitError"
    finally:
        sdk.delete_vm(vm.id)


def test_mcp_tools_stay_inside_the_workspace_root(
    tmp_path: Path, guest_install: Any, pyro_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp import Client

    from pyro.mcp.server import build_server
    from pyro.sdk import Pyro

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("top secret\n")
    (root / "sneaky").symlink_to(tmp_path / "secret")
    monkeypatch.chdir(root)
    spec = {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "mcp-escape"},
        "spec": {
            "environment": "debian:12",
            "files": [{"source": "../secret/key", "target": "/tmp/key"}],
            "steps": [{"name": "s", "run": "cat /tmp/key"}],
        },
    }

    symlinked = json.loads(json.dumps(spec))
    symlinked["spec"]["files"][0]["source"] = "sneaky/key"

    async def main() -> list[str]:
        texts = []
        async with Client(build_server("full", sdk=Pyro())) as client:
            for tool, arguments in (
                ("apply", {"spec": spec}),
                ("apply", {"spec": symlinked}),
                ("task_create", {"environment": "debian:12", "seed_path": "/etc"}),
                ("task_create", {"environment": "debian:12", "seed_path": "sneaky"}),
                ("task_create", {"environment": "debian:12", "seed_path": "../secret"}),
            ):
                result = await client.call_tool(tool, arguments)
                text = "".join(getattr(block, "text", "") for block in result.content)
                structured = result.structured_content or {}
                refused = result.is_error or structured.get("ok") is False
                assert refused, f"{tool} {arguments}: {text}"
                texts.append(text + json.dumps(structured))
        return texts

    texts = anyio.run(main)
    for text in texts:
        assert "top secret" not in text
        assert "outside" in text or "escape" in text, text
    from pyro.machines.registry import VMRegistry

    assert VMRegistry(pyro_state).list() == []


def test_task_secrets_are_redacted_everywhere(
    tmp_path: Path, guest_install: Any, pyro_state: Path
) -> None:
    from pyro.sdk import Pyro

    secret = "s3cr3t-" + os.urandom(6).hex()
    sdk = Pyro()
    task = sdk.create_task("debian:12", secrets={"TOKEN": secret})
    try:
        out = sdk.exec_task(
            task.id,
            'echo "out $TOKEN"; echo "err $TOKEN" >&2; exit 3',
            secret_env=["TOKEN"],
        )
        dumps = [
            out.model_dump_json(),
            sdk.status_task(task.id).model_dump_json(),
            sdk.logs_task(task.id).model_dump_json(),
        ]
        for dump in dumps:
            assert secret not in dump
        assert "[REDACTED:TOKEN]" in dumps[0]
        # On disk, only the secrets file (0600) may hold the value.
        holders = [
            p
            for p in pyro_state.rglob("*")
            if p.is_file() and p.stat().st_size < 50 << 20 and secret.encode() in p.read_bytes()
        ]
        assert all(p.name == "secrets.json" for p in holders), holders
        assert all(p.stat().st_mode & 0o077 == 0 for p in holders)
    finally:
        sdk.delete_task(task.id)
