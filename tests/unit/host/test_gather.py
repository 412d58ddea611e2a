"""pyro.host.gather: the inventory of this host, spec-path entries, registry resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pyro.host.gather as gather
from pyro.errors import RegistryError
from pyro.plan.inventory import CatalogEnvironment, InstalledEnvironment, Inventory
from tests.unit.plan.fixtures import SPEC_DIGEST, environment_spec


def test_gather_on_this_host_is_an_inventory() -> None:
    inventory = gather.gather_inventory(refs=["debian:12"], resolve_remote=False)
    assert isinstance(inventory, Inventory)
    assert [entry.ref for entry in inventory.catalog] == sorted(e.ref for e in inventory.catalog)


def test_local_environments_replace_catalog_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyro.environments.catalog.catalog_entries", lambda: [])
    document = environment_spec("local:1")
    inventory = gather.gather_inventory(
        refs=["local:1"],
        resolve_remote=False,
        base_dir=Path(gather.__file__).parents[1] / "data" / "environments",
        local_environments={"local:1": document},
    )
    (entry,) = inventory.catalog
    assert (entry.ref, entry.name, entry.version) == ("local:1", "local:1", "0.1.0")
    assert (entry.default_vcpus, entry.default_memory_mib) == (2, 256)
    assert entry.spec_digest.startswith("sha256:")
    # a build carries the document and reads its fragment in the Run spec's folder
    assert (entry.document, entry.folder) == (document, ".")


def test_catalog_entries_carry_their_documents() -> None:
    inventory = gather.gather_inventory(refs=["debian:12"], resolve_remote=False)
    entry = next(entry for entry in inventory.catalog if entry.ref == "debian:12")
    assert entry.document.metadata.name == "debian:12" and entry.folder is None
    from pyro.guest.build import agent_source_digest

    assert inventory.agent_source_digest == agent_source_digest()


def test_an_environment_spec_by_path_is_read_in_its_own_folder(tmp_path: Path) -> None:
    """Its folder is recorded relative to the Run spec's, with symlinks resolved (where the
    loader read the fragment from), so apply finds it from the plan alone."""
    real = tmp_path / "shared" / "envs"
    (real / "kernels").mkdir(parents=True)
    (real / "kernels" / "pyro-6.1.config").write_text("CONFIG_X=y\n")
    document = environment_spec("mine:1")
    (real / "env.yaml").write_text(document.model_dump_json(by_alias=True))
    run_dir = tmp_path / "project"
    run_dir.mkdir()
    (run_dir / "envs").symlink_to(real)
    inventory = gather.gather_inventory(
        refs=["envs/env.yaml"], resolve_remote=False, base_dir=run_dir
    )
    entry = next(entry for entry in inventory.catalog if entry.ref == "envs/env.yaml")
    assert (entry.document, entry.folder) == (document, "../shared/envs")


def test_missing_spec_path_gives_no_entry(tmp_path: Path) -> None:
    inventory = gather.gather_inventory(
        refs=["./nope.yaml"], resolve_remote=False, base_dir=tmp_path
    )
    assert all(entry.ref != "./nope.yaml" for entry in inventory.catalog)


SOURCE = "oci://127.0.0.1:5000/pyro/debian:12"
ENTRY = CatalogEnvironment(
    ref="debian:12",
    name="debian:12",
    version="1.0.0",
    spec_digest=SPEC_DIGEST,
    document=environment_spec("debian:12", version="1.0.0"),
    folder=None,
    buildable=True,
    source=SOURCE,
)


def _resolver(answers: dict[str, Any], asked: list[str]) -> Any:
    def resolve(ref: str) -> str:
        asked.append(ref)
        answer = answers[ref]
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    return resolve


def test_resolve_asks_only_for_what_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    oci = "oci://127.0.0.1:5000/pyro/other:2"
    pinned = "oci://127.0.0.1:5000/pyro/pinned@sha256:" + "0" * 64
    answers = {SOURCE: "sha256:" + "a" * 64, oci: RegistryError("offline")}
    monkeypatch.setattr("pyro.oci.resolve", _resolver(answers, asked))
    remote, unresolved = gather._resolve(["debian:12", oci, pinned], {"debian:12": ENTRY}, [])
    assert sorted(asked) == sorted([SOURCE, oci])
    assert [(r.ref, r.digest) for r in remote] == [(SOURCE, "sha256:" + "a" * 64)]
    assert [(u.ref, u.reason) for u in unresolved] == [(oci, "offline")]  # and why not

    asked.clear()
    installed = [
        InstalledEnvironment(
            name="debian:12", version="1.0.0", digest=SPEC_DIGEST, content_digest=SPEC_DIGEST
        )
    ]
    assert gather._resolve(["debian:12"], {"debian:12": ENTRY}, installed) == ([], [])
    assert asked == []


def test_an_image_environment_is_buildable_without_build_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Converting an image needs neither mmdebstrap nor root: such a spec stays buildable
    on a host that cannot build Debian environments."""
    from pyro.spec.environment import EnvironmentSpec

    monkeypatch.setattr("pyro.environments.catalog.catalog_entries", lambda: [])
    monkeypatch.setattr("pyro.environments.catalog.can_build", lambda: (False, "no mmdebstrap"))
    image = EnvironmentSpec.model_validate(
        {
            "apiVersion": "pyro/v1",
            "kind": "Environment",
            "metadata": {"name": "img:1"},
            "spec": {"version": "1.0.0", "from": {"image": "127.0.0.1:5000/app:1"}},
        }
    )
    inventory = gather.gather_inventory(
        refs=["img:1", "local:1"],
        resolve_remote=False,
        base_dir=Path(gather.__file__).parents[1] / "data" / "environments",
        local_environments={"img:1": image, "local:1": environment_spec("local:1")},
    )
    buildable = {entry.ref: entry.buildable for entry in inventory.catalog}
    assert buildable == {"img:1": True, "local:1": False}
