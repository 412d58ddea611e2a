"""``pyro env …`` as a user runs it: a real process, a real registry, a temp cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.registry import Registry

from pyro.environments.cache.store import Cache, Install

pytestmark = pytest.mark.registry

KERNEL = os.urandom(50_000)
ROOTFS = os.urandom(50_000) + b"\0" * 500_000


def pyro(cache: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYRO_CACHE_DIR": str(cache), "PYRO_STATE_DIR": str(cache / "state")}
    env.pop("PYRO_ENV_REGISTRY", None)
    code = "import sys; from pyro.cli.main import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def pushed(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An environment ``cli:1`` pushed with ``pyro env push``; returns its ref."""
    source = tmp_path_factory.mktemp("source")
    staged = source / "staged"
    staged.mkdir()
    (staged / "vmlinux").write_bytes(KERNEL)
    (staged / "rootfs.ext4").write_bytes(ROOTFS)
    Cache(source / "cache").install("cli:1", staged, {"version": "0.1.0"})
    ref = registry.ref("pyro-cli/env", "1")
    done = pyro(source / "cache", "env", "push", "cli:1", ref, "--json")
    assert as_json(done)["digest"].startswith("sha256:")
    return ref


def test_pull_json_is_one_document_without_markers(pushed: str, tmp_path: Path) -> None:
    done = pyro(tmp_path, "env", "pull", pushed, "--json")
    doc = as_json(done)
    assert doc["ok"] is True
    assert Path(doc["environment"]["rootfs"]).read_bytes() == ROOTFS
    assert "phase=" not in done.stderr and "phase=" not in done.stdout


def test_pull_human_markers_on_stderr(pushed: str, tmp_path: Path) -> None:
    done = pyro(tmp_path, "env", "pull", pushed)
    lines = done.stderr.splitlines()
    assert f"[pull] phase=install environment={pushed}" in lines
    assert f"[pull] phase=ready environment={pushed}" in lines
    assert "phase=" not in done.stdout
    again = pyro(tmp_path, "env", "pull", pushed)
    assert "phase=install" not in again.stderr
    assert f"[pull] phase=ready environment={pushed}" in again.stderr.splitlines()


def _install(cache: Path, name: str) -> Install:
    install = Cache(cache).lookup(name)
    assert install is not None
    return install


def _rewrite_manifest_with_wrong_digest(i: Install) -> None:
    manifest = json.loads((i.dir / "manifest.json").read_text())
    manifest["artifacts"]["kernel"]["sha256"] = "sha256:" + "0" * 64
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (i.dir / "manifest.json").write_bytes(data)
    i.dir.rename(i.dir.parent / digest[7:])
    (i.dir.parent / "current.json").write_text(json.dumps({"name": i.name, "digest": digest}))


def _broken_symlink(i: Install) -> None:
    i.rootfs.unlink()
    i.rootfs.symlink_to("/nonexistent/rootfs.ext4")


def _empty_dir(i: Install) -> None:
    for child in i.dir.iterdir():
        child.unlink()


CORRUPTIONS: dict[str, Callable[[Install], None]] = {
    "empty install dir": _empty_dir,
    "missing kernel": lambda i: i.kernel.unlink(),
    "truncated rootfs": lambda i: os.truncate(i.rootfs, 1000),
    "rootfs is a broken symlink": _broken_symlink,
    "manifest missing": lambda i: (i.dir / "manifest.json").unlink(),
    "manifest lists a wrong digest": _rewrite_manifest_with_wrong_digest,
    "current.json points at nothing": lambda i: (i.dir.parent / "current.json").write_text(
        json.dumps({"name": i.name, "digest": "sha256:" + "e" * 64})
    ),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corruption_shown_invalid_then_repaired_by_pull(
    corrupt: Callable[[Install], None], pushed: str, registry: Registry, tmp_path: Path
) -> None:
    pyro(tmp_path, "env", "pull", pushed)
    corrupt(_install(tmp_path, pushed))

    listed = {
        e["name"]: e for e in as_json(pyro(tmp_path, "env", "list", "--json"))["environments"]
    }
    assert listed[pushed]["state"] == "invalid", listed[pushed]
    inspected = as_json(pyro(tmp_path, "env", "inspect", pushed, "--verify", "--json"))
    assert inspected["environment"]["state"] == "invalid"
    assert inspected["environment"]["reason"]
    human = pyro(tmp_path, "env", "list").stdout
    assert any(line.startswith(pushed) and "invalid" in line for line in human.splitlines())

    before = len(registry.blob_requests())
    pyro(tmp_path, "env", "pull", pushed)
    assert len(registry.blob_requests()) > before  # really fetched again

    repaired = as_json(pyro(tmp_path, "env", "inspect", pushed, "--verify", "--json"))
    assert repaired["environment"]["state"] == "installed"
    assert repaired["environment"]["verified"] is True
    assert _install(tmp_path, pushed).rootfs.read_bytes() == ROOTFS
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_leftover_tmp_dir_from_interrupted_pull(pushed: str, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / "tmp" / f"{dead.pid}-pull"
    leftover.mkdir(parents=True)
    (leftover / "rootfs.ext4").write_bytes(ROOTFS[:1000])

    pyro(tmp_path, "env", "pull", pushed)

    assert not leftover.exists()
    assert _install(tmp_path, pushed).rootfs.read_bytes() == ROOTFS


def test_prune_json(pushed: str, tmp_path: Path) -> None:
    pyro(tmp_path, "env", "pull", pushed)
    _install(tmp_path, pushed).kernel.unlink()
    doc = as_json(pyro(tmp_path, "env", "prune", "--json"))
    assert doc["ok"] is True and len(doc["pruned"]) >= 1
    assert doc["freedBytes"] > 0
    states = {
        e["name"]: e["state"]
        for e in as_json(pyro(tmp_path, "env", "list", "--json"))["environments"]
    }
    assert pushed not in states


def test_errors_exit_1_with_hint(tmp_path: Path) -> None:
    done = pyro(tmp_path, "env", "pull", "oci://127.0.0.1:9/none/x:1", check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-2].startswith("error: cannot reach registry 127.0.0.1:9")
    assert done.stderr.splitlines()[-1].startswith("hint: ")
    assert "Traceback" not in done.stderr

    bad = pyro(tmp_path, "env", "inspect", "no-such-env", "--json", check=False)
    assert bad.returncode == 1
    doc = as_json(bad)
    assert doc["ok"] is False and doc["error"]["type"] == "EnvironmentNotFoundError"

    usage = pyro(tmp_path, "env", "push", "cli:1", "not-a-ref", check=False)
    assert usage.returncode == 2
    assert "oci://" in usage.stderr
