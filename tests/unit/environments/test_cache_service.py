"""The environment service's decisions: use, pull or build; with a fake builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyro.environments.build import builder
from pyro.environments.cache.store import Cache
from pyro.environments.catalog import CatalogEntry
from pyro.environments.service import EnvironmentService, ProgressEvent
from pyro.errors import EnvironmentNotFoundError, UsageError

SPEC = """\
apiVersion: pyro/v1
kind: Environment
metadata: {name: "local:1"}
spec:
  version: 0.3.0
  kernel: {package: linux-source-6.1, fragment: frag.config}
  rootfs: {packages: [git]}
  defaults: {vcpus: 2, memoryMiB: 640}
"""


class FakeBuilt:
    def __init__(self, entry: CatalogEntry) -> None:
        self.entry = entry

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.entry.name,
            "version": self.entry.spec.spec.version,
            "specDigest": self.entry.spec_digest,
            "kernel": {"release": "6.1.0-fake"},
        }


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the real (minutes-long) builder with one writing small fake artifacts."""
    done: list[str] = []

    def fake_build(entry: CatalogEntry, out_dir: Path, *, cache_root: Path, log: Any) -> Any:
        out_dir.mkdir(parents=True)
        (out_dir / "vmlinux").write_bytes(b"kernel of " + entry.name.encode())
        (out_dir / "rootfs.ext4").write_bytes(b"\0" * 8192)
        log(f"built {entry.name}")
        done.append(entry.name)
        return FakeBuilt(entry)

    monkeypatch.setattr(builder, "build_environment", fake_build)
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    return done


@pytest.fixture
def service(tmp_path: Path) -> EnvironmentService:
    return EnvironmentService(Cache(tmp_path / "cache"))


def test_catalog_entry_without_source_is_built_once(
    service: EnvironmentService, builds: list[str]
) -> None:
    events: list[ProgressEvent] = []
    install = service.pull("debian:12", progress=events.append)
    assert builds == ["debian:12"]
    assert events[0].phase == "install" and events[-1].phase == "ready"
    assert any(e.phase == "build" and "building locally" in e.message for e in events)
    assert install.source is None and install.source_digest is None
    assert install.manifest["createdFrom"]["kernel"] == {"release": "6.1.0-fake"}

    again = service.pull("debian:12")
    assert again == install and builds == ["debian:12"]


def test_build_with_nothing_changed_keeps_the_install_unless_forced(
    service: EnvironmentService, builds: list[str]
) -> None:
    first = service.build("debian:12")
    assert service.build("debian:12") == first and builds == ["debian:12"]
    service.build("debian:12", force=True)
    assert builds == ["debian:12", "debian:12"]


def test_invalid_install_is_rebuilt(service: EnvironmentService, builds: list[str]) -> None:
    install = service.pull("debian:12")
    install.kernel.unlink()
    assert service.inspect("debian:12").state == "invalid"
    assert [s.state for s in service.list_environments() if s.name == "debian:12"] == ["invalid"]
    repaired = service.pull("debian:12")
    assert builds == ["debian:12", "debian:12"]
    assert service.cache.verify("debian:12") == repaired


def test_spec_path_relative_to_base_dir(
    service: EnvironmentService, builds: list[str], tmp_path: Path
) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "local.yaml").write_text(SPEC)
    (tmp_path / "envs" / "frag.config").write_text("CONFIG_X=y\n")

    install = service.build("envs/local.yaml", base_dir=tmp_path)

    assert builds == ["local:1"]
    assert install.name == "local:1" and install.version == "0.3.0"
    [entry] = [e for e in service.cache.installed() if e.name == "local:1"]
    assert (entry.default_vcpus, entry.default_memory_mib) == (2, 640)
    details = service.inspect("local:1", verify=True)
    assert details.state == "installed" and details.verified and not details.in_catalog


def test_unknown_and_unbuildable_references(service: EnvironmentService, builds: list[str]) -> None:
    with pytest.raises(EnvironmentNotFoundError, match="debian:12"):
        service.pull("debian:13")  # suggests the close catalog name
    with pytest.raises(UsageError, match="only catalog names and spec files"):
        service.build("oci://127.0.0.1:9/x:1")
    with pytest.raises(UsageError):
        service.pull("UPPER CASE")
    assert builds == []


def test_list_shows_catalog_and_installed(service: EnvironmentService, builds: list[str]) -> None:
    service.pull("debian:12-base")
    states = {s.name: s for s in service.list_environments()}
    assert states["debian:12-base"].state == "installed"
    assert states["debian:12-base"].digest is not None
    assert states["debian:12"].state == "not-installed" and states["debian:12"].in_catalog


def test_prune_through_service(service: EnvironmentService, builds: list[str]) -> None:
    service.pull("debian:12").rootfs.unlink()
    pruned = service.prune()
    assert len(pruned) == 1 and "invalid" in pruned[0].reason
    assert service.inspect("debian:12").state == "not-installed"
