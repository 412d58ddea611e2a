"""Push and pull environments through a real registry (Debian's docker-registry).

Fake artifacts (random bytes) keep these fast; the cache does not care what the bytes are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.registry import Registry

from pyro.environments.cache.store import Cache, Install
from pyro.environments.service import EnvironmentService, ProgressEvent
from pyro.errors import EnvironmentInvalidError, RegistryError

pytestmark = pytest.mark.registry

KERNEL = os.urandom(300_000)
ROOTFS = os.urandom(200_000) + b"\0" * 2_000_000


def make_source(tmp_path: Path, name: str = "fake:1", rootfs: bytes = ROOTFS) -> Cache:
    """A cache holding one install called ``name`` (the thing we push)."""
    cache = Cache(tmp_path / "source-cache")
    staged = tmp_path / "staged"
    staged.mkdir(exist_ok=True)
    (staged / "vmlinux").write_bytes(KERNEL)
    (staged / "rootfs.ext4").write_bytes(rootfs)
    meta = {
        "name": name,
        "version": "1.0.0",
        "spec_digest": "sha256:" + "1" * 64,
        "defaults": {"vcpus": 2, "memoryMiB": 768},
    }
    cache.install(name, staged, meta)
    return cache


def push(registry: Registry, tmp_path: Path, repo: str, **kwargs: bytes) -> tuple[str, str]:
    ref = registry.ref(repo, "1")
    digest = EnvironmentService(make_source(tmp_path, **kwargs)).push("fake:1", ref)
    return ref, digest


def manifest_of(registry: Registry, repo: str, digest: str) -> dict[str, object]:
    hexdigest = digest.removeprefix("sha256:")
    path = registry.blob_path(digest)
    assert path.is_file(), f"manifest blob {hexdigest} not in registry storage"
    return dict(json.loads(path.read_bytes()))


def test_push_then_pull_into_empty_cache_is_byte_identical(
    registry: Registry, tmp_path: Path
) -> None:
    ref, digest = push(registry, tmp_path, "pyro/roundtrip")
    events: list[ProgressEvent] = []
    service = EnvironmentService(Cache(tmp_path / "empty"))

    install = service.pull(ref, progress=events.append)

    assert install.kernel.read_bytes() == KERNEL
    assert install.rootfs.read_bytes() == ROOTFS
    assert install.source == f"{ref}@{digest}"
    assert service.cache.verify(ref) == install
    # Installed under the reference only, never under the name its config carries.
    inventory = {e.name: e for e in service.cache.installed()}
    assert list(inventory) == [ref]
    assert inventory[ref].default_vcpus == 2
    assert inventory[ref].default_memory_mib == 768
    phases = [e.phase for e in events]
    assert phases[0] == "install" and phases[-1] == "ready" and "download" in phases


def test_artifact_manifest_format(registry: Registry, tmp_path: Path) -> None:
    _, digest = push(registry, tmp_path, "pyro/format")
    manifest = manifest_of(registry, "pyro/format", digest)
    assert manifest["artifactType"] == "application/vnd.pyro.environment.v1+json"
    config = manifest["config"]
    assert isinstance(config, dict)
    assert config["mediaType"] == "application/vnd.pyro.environment.config.v1+json"
    layers = manifest["layers"]
    assert isinstance(layers, list)
    assert [layer["mediaType"] for layer in layers] == [
        "application/vnd.pyro.kernel.v1+zstd",
        "application/vnd.pyro.rootfs.ext4.v1+zstd",
    ]
    titles = [layer["annotations"]["org.opencontainers.image.title"] for layer in layers]
    assert titles == ["vmlinux", "rootfs.ext4"]
    assert layers[1]["annotations"]["dev.pyro.uncompressed.size"] == str(len(ROOTFS))


def test_installed_pull_sends_no_request(registry: Registry, tmp_path: Path) -> None:
    ref, _ = push(registry, tmp_path, "pyro/noreq")
    service = EnvironmentService(Cache(tmp_path / "cache"))
    service.pull(ref)
    before = registry.requests()

    events: list[ProgressEvent] = []
    service.pull(ref, progress=events.append)

    after = registry.requests()
    assert after[len(before) :] == []
    assert [e.phase for e in events] == ["ready"]


def test_two_processes_pull_once(registry: Registry, tmp_path: Path) -> None:
    ref, _ = push(registry, tmp_path, "pyro/concurrent")
    cache_dir = tmp_path / "shared-cache"
    before = len(registry.blob_requests())
    script = (
        "import sys; from pyro.environments.cache.store import Cache;"
        "from pyro.environments.service import EnvironmentService;"
        "i = EnvironmentService(Cache(sys.argv[1])).pull(sys.argv[2]); print(i.digest)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cache_dir), ref],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    assert results[0][0] == results[1][0]
    gets = [r for r in registry.blob_requests()[before:] if r.method == "GET"]
    assert len(gets) == 3, gets  # config + kernel + rootfs, once
    assert Cache(cache_dir).verify(ref).rootfs.read_bytes() == ROOTFS


def test_registry_killed_mid_pull(fresh_registry: Registry, tmp_path: Path) -> None:
    big = os.urandom(24 << 20)  # incompressible: the rootfs blob stays ~24 MiB
    ref, _ = push(fresh_registry, tmp_path, "pyro/killed", rootfs=big)
    cache = Cache(tmp_path / "cache")
    service = EnvironmentService(cache)

    def kill_on_rootfs(event: ProgressEvent) -> None:
        if event.phase == "download" and "rootfs" in event.message:
            fresh_registry.kill()

    with pytest.raises(RegistryError):
        service.pull(ref, progress=kill_on_rootfs)
    assert cache.lookup(ref) is None
    assert cache.installed() == []
    assert list(cache.tmp_root.iterdir()) == []

    fresh_registry.start()
    install = service.pull(ref)
    assert install.rootfs.read_bytes() == big
    assert cache.verify(ref) == install


def test_tampered_blob_is_rejected(fresh_registry: Registry, tmp_path: Path) -> None:
    ref, digest = push(fresh_registry, tmp_path, "pyro/tampered")
    layers = manifest_of(fresh_registry, "pyro/tampered", digest)["layers"]
    assert isinstance(layers, list)
    blob = fresh_registry.blob_path(layers[1]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    blob.write_bytes(bytes(data))
    cache = Cache(tmp_path / "cache")

    with pytest.raises(RegistryError, match="does not match its digest"):
        EnvironmentService(cache).pull(ref)
    assert cache.lookup(ref) is None
    assert cache.installed() == []


def test_push_requires_a_valid_install(registry: Registry, tmp_path: Path) -> None:
    source = make_source(tmp_path)
    install = source.lookup("fake:1")
    assert isinstance(install, Install)
    os.truncate(install.rootfs, 10)
    with pytest.raises(EnvironmentInvalidError):
        EnvironmentService(source).push("fake:1", registry.ref("pyro/never", "1"))
    assert not any("/pyro/never/" in r.path for r in registry.requests())


def test_missing_tag_and_unreachable_registry(registry: Registry, tmp_path: Path) -> None:
    service = EnvironmentService(Cache(tmp_path / "cache"))
    with pytest.raises(RegistryError, match="not found") as missing:
        service.pull(registry.ref("pyro/nothing-here", "1"))
    assert "pyro env push" in missing.value.hint
    with pytest.raises(RegistryError, match="cannot reach"):
        service.pull("oci://127.0.0.1:9/pyro/x:1")


def test_catalog_entry_pulls_from_its_registry_source(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(tmp_path, name="debian:12")
    repo_ref = registry.ref("pyro-cat/debian", "12")
    EnvironmentService(source).push("debian:12", repo_ref)
    monkeypatch.setenv("PYRO_ENV_REGISTRY", f"{registry.address}/pyro-cat")
    service = EnvironmentService(Cache(tmp_path / "cache"))

    # A package-data-like empty directory for debian:12 must not win over the pull.
    seeded = service.cache.slug_dir("debian:12")
    seeded.mkdir(parents=True)
    (seeded / "vmlinux").symlink_to("/nonexistent")
    assert service.inspect("debian:12").state == "invalid"

    install = service.pull("debian:12")

    assert install.rootfs.read_bytes() == ROOTFS
    assert install.source is not None and install.source.startswith(repo_ref + "@sha256:")
    assert not any(p.is_symlink() for p in service.cache.root.rglob("*"))
    assert service.inspect("debian:12", verify=True).state == "installed"


def test_real_debian_12_roundtrip(registry: Registry, tmp_path: Path) -> None:
    """The real debian:12 from this host's cache, when it has been built or pulled."""
    real = Cache().lookup("debian:12")
    if real is None:
        pytest.skip("debian:12 is not installed in $PYRO_CACHE_DIR (run 'pyro env pull debian:12')")
    ref = registry.ref("pyro-real/debian", "12")
    EnvironmentService(Cache()).push("debian:12", ref)
    install = EnvironmentService(Cache(tmp_path / "cache")).pull(ref)
    assert install.manifest["artifacts"] == real.manifest["artifacts"]


def test_basic_auth_from_env_and_docker_config(
    auth_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("PYRO_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("PYRO_REGISTRY_PASSWORD", raising=False)
    monkeypatch.delenv("PYRO_REGISTRY_HOST", raising=False)
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    ref = auth_registry.ref("pyro/private", "1")
    source = make_source(tmp_path)

    with pytest.raises(RegistryError, match="refused access") as refused:
        EnvironmentService(source).push("fake:1", ref)
    assert "PYRO_REGISTRY_USERNAME" in refused.value.hint

    monkeypatch.setenv("PYRO_REGISTRY_USERNAME", "pyro")
    monkeypatch.setenv("PYRO_REGISTRY_PASSWORD", "s3cret")
    monkeypatch.setenv("PYRO_REGISTRY_HOST", auth_registry.address)
    EnvironmentService(source).push("fake:1", ref)
    monkeypatch.delenv("PYRO_REGISTRY_USERNAME")
    monkeypatch.delenv("PYRO_REGISTRY_PASSWORD")
    monkeypatch.delenv("PYRO_REGISTRY_HOST")

    (tmp_path / "docker").mkdir()
    auth = base64.b64encode(b"pyro:s3cret").decode()
    (tmp_path / "docker" / "config.json").write_text(
        json.dumps({"auths": {auth_registry.address: {"auth": auth}}})
    )
    install = EnvironmentService(Cache(tmp_path / "cache")).pull(ref)
    assert install.rootfs.read_bytes() == ROOTFS
