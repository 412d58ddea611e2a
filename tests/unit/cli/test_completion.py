"""Shell completion as a shell drives it: ``pyro`` called back with ``_PYRO_COMPLETE`` set.

Each case runs pyro in a subprocess with its own state and cache folders, holding VMs,
tasks and installs made by pyro's own registry and cache code (nothing boots). The bash
case loads the script ``pyro completion bash`` prints into a real bash and calls it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyro.environments.cache.store import Cache
from pyro.machines.registry import VMRegistry

ROOT = Path(__file__).parents[3]


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, str]:
    return {
        "PYRO_STATE_DIR": str(tmp_path / "state"),
        "PYRO_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }


def pyro(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pyro.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def complete(line: str, env: dict[str, str], shell: str = "bash") -> list[tuple[str, str]]:
    """The (type, value) pairs pyro offers for the last word of ``line``."""
    words = line.split(" ")
    result = pyro(
        env={
            **env,
            "_PYRO_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1) if shell != "fish" else words[-1],
        }
    )
    assert result.returncode == 0 and result.stderr == ""
    if shell == "zsh":  # type, value, help: three lines each
        lines = result.stdout.splitlines()
        return [(lines[i], lines[i + 1]) for i in range(0, len(lines), 3)]
    pairs = [line.split(",", 1) for line in result.stdout.splitlines() if line]
    return [(kind, value.split("\t")[0]) for kind, value in pairs]


def values(pairs: list[tuple[str, str]]) -> list[str]:
    return [value for _, value in pairs]


def make_record(state: Path, kind: str, name: str | None = None) -> str:
    record = VMRegistry(state).create(
        environment="debian:12",
        environment_digest="sha256:0",
        kernel=state / "k",
        initrd=state / "i",
        rootfs=state / "r",
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=128,
        kind=kind,  # type: ignore[arg-type]
        name=name,
    )
    return record.id


def test_subcommands_and_options(folders: dict[str, str]) -> None:
    assert values(complete("pyro vm st", folders)) == ["start", "status", "stop"]
    assert "completion" in values(complete("pyro ", folders))
    assert "--vcpus" in values(complete("pyro run --v", folders))


def test_environment_names_are_the_catalog_and_what_is_installed(
    folders: dict[str, str], tmp_path: Path
) -> None:
    assert values(complete("pyro run deb", folders)) == [
        "debian:12",
        "debian:12-base",
        "debian:12-build",
    ]
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "vmlinux").write_bytes(b"kernel")
    (staged / "rootfs.ext4").write_bytes(b"rootfs")
    Cache(Path(folders["PYRO_CACHE_DIR"])).install("team-env:3", staged, {"version": "3"})
    for line in ("pyro run ", "pyro env inspect ", "pyro vm create ", "pyro task create "):
        found = values(complete(line, folders))
        assert "team-env:3" in found and "debian:12" in found, line
    assert values(complete("pyro env build t", folders)) == ["team-env:3"]
    zsh = complete("pyro run team", folders, shell="zsh")
    assert zsh == [("plain", "team-env\\:3")]


def test_a_path_is_left_to_the_shell(folders: dict[str, str]) -> None:
    assert complete("pyro run ./env", folders) == [("file", "./env")]
    assert complete("pyro env build ./x", folders, shell="fish") == [("file", "./x")]


def test_vm_and_task_ids_from_the_registry(folders: dict[str, str]) -> None:
    state = Path(folders["PYRO_STATE_DIR"])
    vm = make_record(state, "vm")
    task = make_record(state, "task", name="build")
    assert values(complete("pyro vm status ", folders)) == [vm]
    assert values(complete("pyro vm exec ", folders)) == [vm]
    assert values(complete(f"pyro vm delete {vm[:4]}", folders)) == [vm]
    for line in ("pyro task exec ", "pyro task file read ", "pyro task snapshot create "):
        assert values(complete(line, folders)) == [task], line
    assert values(complete("pyro task status zz", folders)) == []
    zsh = complete("pyro task logs ", folders, shell="zsh")
    assert zsh == [("plain", task)]


def test_completion_never_fails_on_broken_state(folders: dict[str, str]) -> None:
    state = Path(folders["PYRO_STATE_DIR"])
    good = make_record(state, "vm")
    (state / "vms" / "0123456789ab").mkdir()
    (state / "vms" / "0123456789ab" / "vm.json").write_text("{not json")
    (state / "vms" / "ba9876543210").mkdir()  # no record at all
    assert values(complete("pyro vm status ", folders)) == [good]
    shutil.rmtree(state)
    state.write_text("a file where the state folder should be")
    assert complete("pyro vm status ", folders) == []
    cache = Path(folders["PYRO_CACHE_DIR"])
    cache.mkdir()
    (cache / "environments").write_text("not a folder")
    assert "debian:12" in values(complete("pyro run ", folders))


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(folders: dict[str, str], shell: str) -> None:
    result = pyro("completion", shell, env=folders)
    assert result.returncode == 0
    assert f"_PYRO_COMPLETE={shell}_source" not in result.stdout
    assert f"{shell}_complete" in result.stdout and "pyro" in result.stdout


def test_an_unknown_shell_is_a_usage_error(folders: dict[str, str]) -> None:
    result = pyro("completion", "tcsh", env=folders)
    assert result.returncode == 2
    assert "Invalid value for 'SHELL': 'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_script_completes_a_task_id_in_bash(
    folders: dict[str, str], tmp_path: Path
) -> None:
    task = make_record(Path(folders["PYRO_STATE_DIR"]), "task")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pyro"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pyro.cli "$@"\n')
    wrapper.chmod(0o755)
    script = (
        'eval "$(pyro completion bash)"\n'
        "COMP_WORDS=(pyro task exec '')\nCOMP_CWORD=3\n"
        "_pyro_completion pyro\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **folders, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [task]
