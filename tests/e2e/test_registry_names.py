"""A registry's artifact cannot re-point a catalog name (issue #17, item 2).

The config blob of an artifact carries a ``name``; it is the registry's word, not the
user's. A real registry (Debian's docker-registry on 127.0.0.1) holds an artifact whose
config says ``debian:12``; pulling it by its ``oci://`` reference must leave the catalog's
``debian:12`` exactly as it was, and say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.registry import Registry

from pyro.environments.cache.store import Cache, Install
from pyro.environments.service import EnvironmentService, ProgressEvent

pytestmark = [pytest.mark.registry, pytest.mark.hostile]

GOOD_KERNEL = b"good kernel " * 1000
GOOD_ROOTFS = b"good rootfs " * 1000
EVIL_KERNEL = b"evil kernel " * 1000
EVIL_ROOTFS = b"evil rootfs " * 1000


def install(cache: Cache, name: str, kernel: bytes, rootfs: bytes, work: Path) -> Install:
    staged = work / f"staged-{os.urandom(4).hex()}"
    staged.mkdir(parents=True)
    (staged / "vmlinux").write_bytes(kernel)
    (staged / "rootfs.ext4").write_bytes(rootfs)
    return cache.install(name, staged, {"name": name, "version": "1.0.0"})


def push_named(registry: Registry, tmp_path: Path, name: str, repo: str, tag: str) -> str:
    """Push an artifact whose config says ``name`` (evil bytes) to ``repo:tag``."""
    source = Cache(tmp_path / f"source-{repo.replace('/', '-')}")
    install(source, name, EVIL_KERNEL, EVIL_ROOTFS, tmp_path)
    ref = registry.ref(repo, tag)
    EnvironmentService(source).push(name, ref)
    return ref


def pyro(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
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
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def inspect(cache: Path, name: str) -> dict[str, Any]:
    return dict(json.loads(pyro(cache, "env", "inspect", name, "--json").stdout)["environment"])


def test_oci_pull_of_an_artifact_named_debian_12_leaves_debian_12_alone(
    registry: Registry, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    before = install(Cache(cache_dir), "debian:12", GOOD_KERNEL, GOOD_ROOTFS, tmp_path)
    seen_before = inspect(cache_dir, "debian:12")
    evil = push_named(registry, tmp_path, "debian:12", "evil", "1")

    done = pyro(cache_dir, "env", "pull", evil, "--json")

    after = Cache(cache_dir).verify("debian:12")
    assert after.kernel.read_bytes() == GOOD_KERNEL
    assert after.rootfs.read_bytes() == GOOD_ROOTFS
    assert after.digest == before.digest
    assert inspect(cache_dir, "debian:12") == seen_before
    # The artifact is there, under the reference it was pulled by and nothing else.
    assert Cache(cache_dir).verify(evil).kernel.read_bytes() == EVIL_KERNEL
    assert sorted(Cache(cache_dir).names()) == sorted(["debian:12", evil])
    pulled = json.loads(done.stdout)["environment"]
    assert pulled["name"] == evil
    assert any("debian:12" in w and "installed only as" in w for w in pulled["warnings"])


def test_oci_pull_does_not_install_a_catalog_name_that_was_missing(
    registry: Registry, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    evil = push_named(registry, tmp_path, "debian:12", "evil-fresh", "1")

    done = pyro(cache_dir, "env", "pull", evil)

    assert inspect(cache_dir, "debian:12")["state"] == "not-installed"
    assert Cache(cache_dir).names() == [evil]
    assert "[pull] warning: " in done.stderr and "does not replace 'debian:12'" in done.stderr


def test_catalog_pull_from_its_source_keeps_its_name_and_warns(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog entry's own source may change debian:12; its config's name may not
    create or change another name."""
    push_named(registry, tmp_path, "other:1", "pyro-names/debian", "12")
    monkeypatch.setenv("PYRO_ENV_REGISTRY", f"{registry.address}/pyro-names")
    cache = Cache(tmp_path / "cache")
    events: list[ProgressEvent] = []

    got = EnvironmentService(cache).pull("debian:12", progress=events.append)

    assert cache.status("other:1").state == "not-installed"
    assert cache.names() == ["debian:12"]
    assert got.name == "debian:12" and got.kernel.read_bytes() == EVIL_KERNEL
    warnings = [e.message for e in events if e.phase == "warning"]
    assert len(warnings) == 1 and "calls itself 'other:1'" in warnings[0]
    assert got.warnings == tuple(warnings)


def test_sdk_pull_result_carries_the_warning(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyro import Pyro

    evil = push_named(registry, tmp_path, "debian:12", "evil-sdk", "1")
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)

    details = Pyro(state_dir=tmp_path / "state").pull_environment(evil)

    assert Cache(tmp_path / "cache").status("debian:12").state == "not-installed"
    assert details.name == evil
    assert len(details.warnings) == 1 and "does not replace 'debian:12'" in details.warnings[0]
