"""A package-data-like environment directory in the cache never shadows the real pull.

An older layout (or a careless packager) could leave ``environments/<slug>/`` holding empty
files, symlinks into a package's data folder, or a ``current.json`` naming a half-written
install. ``pyro env pull debian:12`` — the catalog entry, given a registry source through
``$PYRO_ENV_REGISTRY`` — must ignore all of it, install what the registry has, and leave
regular files only. Real CLI process, real registry; the artifacts are random bytes (the
cache does not care what they are).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.registry import Registry

from pyro.environments.cache.store import Cache

pytestmark = pytest.mark.registry

NAME = "debian:12"
KERNEL = os.urandom(40_000)
ROOTFS = os.urandom(40_000) + b"\0" * 400_000


def pyro(cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYRO_CACHE_DIR": str(cache), "PYRO_STATE_DIR": str(cache / "st")}
    full_env.pop("PYRO_ENV_REGISTRY", None)
    full_env.update(env)
    code = "import sys; from pyro.cli.main import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


@pytest.fixture(scope="module")
def source(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """debian:12 (fake bytes) pushed to ``<registry>/pyro/debian:12``; returns the source."""
    work = tmp_path_factory.mktemp("shadow-source")
    staged = work / "staged"
    staged.mkdir()
    (staged / "vmlinux").write_bytes(KERNEL)
    (staged / "rootfs.ext4").write_bytes(ROOTFS)
    Cache(work / "cache").install(NAME, staged, {"version": "1.0.0"})
    pyro(work / "cache", "env", "push", NAME, registry.ref("pyro/debian", "12"))
    return f"{registry.address}/pyro"


def _empty_dir(slug_dir: Path, package_data: Path) -> None:
    slug_dir.mkdir(parents=True)


def _links_into_package_data(slug_dir: Path, package_data: Path) -> None:
    slug_dir.mkdir(parents=True)
    (slug_dir / "vmlinux").symlink_to(package_data / "vmlinux")
    (slug_dir / "rootfs.ext4").symlink_to(package_data / "rootfs.ext4")
    (slug_dir / "manifest.json").write_text("{}")


def _current_names_partial_install(slug_dir: Path, package_data: Path) -> None:
    partial = slug_dir / ("ab" * 32)
    partial.mkdir(parents=True)
    (partial / "vmlinux").write_bytes(b"")
    (partial / "rootfs.ext4").symlink_to(package_data / "rootfs.ext4")
    (partial / "manifest.json").write_text(json.dumps({"name": NAME, "version": "1.0.0"}))
    current = {"name": NAME, "digest": "sha256:" + "ab" * 32}
    (slug_dir / "current.json").write_text(json.dumps(current))


def _current_is_a_symlink(slug_dir: Path, package_data: Path) -> None:
    slug_dir.mkdir(parents=True)
    target = package_data / "current.json"
    target.write_text(json.dumps({"name": NAME, "digest": "sha256:" + "cd" * 32}))
    (slug_dir / "current.json").symlink_to(target)


SEEDS: dict[str, Callable[[Path, Path], None]] = {
    "empty dir": _empty_dir,
    "links into package data": _links_into_package_data,
    "current.json names a partial install": _current_names_partial_install,
    "current.json is a symlink": _current_is_a_symlink,
}


def _links_under(root: Path) -> list[str]:
    return [
        os.path.join(d, n)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
        if os.path.islink(os.path.join(d, n))
    ]


@pytest.mark.parametrize("seed", list(SEEDS), ids=list(SEEDS))
def test_seeded_environment_dir_is_ignored_for_the_real_pull(
    seed: str, source: str, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    package_data = tmp_path / "site-packages" / "pyro" / "data" / "environments" / "debian-12"
    package_data.mkdir(parents=True)
    (package_data / "vmlinux").write_bytes(b"")  # what an empty package-data stub holds
    (package_data / "rootfs.ext4").write_bytes(b"")
    slug_dir = Cache(cache_dir).slug_dir(NAME)
    SEEDS[seed](slug_dir, package_data)

    listed = json.loads(pyro(cache_dir, "env", "list", "--json").stdout)["environments"]
    assert next(e for e in listed if e["name"] == NAME)["state"] != "installed"

    pyro(cache_dir, "env", "pull", NAME, PYRO_ENV_REGISTRY=source)

    inspected = json.loads(pyro(cache_dir, "env", "inspect", NAME, "--json").stdout)
    details = inspected["environment"]
    assert details["state"] == "installed"
    assert details["source"].startswith(f"oci://{source}/debian:12@sha256:")
    install = Cache(cache_dir).verify(NAME)
    assert install.dir.parent == slug_dir
    assert install.kernel.read_bytes() == KERNEL
    assert hashlib.sha256(install.rootfs.read_bytes()).digest() == hashlib.sha256(ROOTFS).digest()
    assert _links_under(cache_dir) == []
    assert sorted(os.listdir(slug_dir)) == sorted(["current.json", install.digest[7:]])
    # The package-data stand-in was only ever pointed at, never written through.
    assert (package_data / "vmlinux").read_bytes() == b""
    assert (package_data / "rootfs.ext4").read_bytes() == b""
