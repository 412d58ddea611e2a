"""pyro.host.gather: host facts, guarded calls into other modules, registry resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pyro.host.gather as gather
from pyro.errors import RegistryError
from pyro.plan.inventory import CatalogEnvironment, InstalledEnvironment, Inventory

from .fixtures import SPEC_DIGEST, environment_spec


def _files(tmp_path: Path, *, kvm: bool, flags: str, pvm: bool) -> dict[str, Path]:
    dev, cpuinfo, module = tmp_path / "kvm", tmp_path / "cpuinfo", tmp_path / "kvm_pvm"
    if kvm:
        dev.write_text("")
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    if pvm:
        module.mkdir()
    return {"dev": dev, "cpuinfo": cpuinfo, "pvm_module": module}


@pytest.mark.parametrize(
    ("kvm", "flags", "pvm", "kind"),
    [
        (False, "vmx", False, "none"),
        (True, "vmx", False, "hardware"),
        (True, "svm", False, "hardware"),
        (True, "", False, "pvm"),
        (True, "vmx", True, "pvm"),
    ],
)
def test_kvm_kind(tmp_path: Path, kvm: bool, flags: str, pvm: bool, kind: str) -> None:
    assert gather._kvm_kind(**_files(tmp_path, kvm=kvm, flags=flags, pvm=pvm)) == kind


def test_memory_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684472 kB\nMemFree:  1 kB\n")
    assert gather._memory_mib(meminfo) == 24105
    assert gather._memory_mib(tmp_path / "missing") == 0


def test_fallback_probe_describes_this_host() -> None:
    host = gather.probe_host_fallback()
    assert host.arch and host.cpus >= 1 and host.memory_mib > 0
    assert host.kvm in ("hardware", "pvm", "none")


def test_missing_modules_give_empty_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gather, "_optional", lambda module, name: None)
    inventory = gather.gather_inventory(refs=["debian:12", "oci://127.0.0.1:1/x/y:1"])
    assert inventory.backends == [] and inventory.installed == [] and inventory.catalog == []
    assert inventory.remote == [] and inventory.agent_digest is None
    assert inventory.host == gather.probe_host_fallback()


def test_optional_tolerates_only_missing_modules() -> None:
    assert gather._optional("pyro.no_such_module", "x") is None
    assert gather._optional("json", "no_such_name") is None
    assert gather._optional("json", "dumps") is not None


def test_gather_on_this_host_is_an_inventory() -> None:
    inventory = gather.gather_inventory(refs=["debian:12"], resolve_remote=False)
    assert isinstance(inventory, Inventory)
    assert [entry.ref for entry in inventory.catalog] == sorted(e.ref for e in inventory.catalog)


def test_local_environments_replace_catalog_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gather, "_catalog", lambda: [])
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

    return lambda: resolve


def test_resolve_asks_only_for_what_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    oci = "oci://127.0.0.1:5000/pyro/other:2"
    pinned = "oci://127.0.0.1:5000/pyro/pinned@sha256:" + "0" * 64
    answers = {SOURCE: "sha256:" + "a" * 64, oci: RegistryError("offline")}
    monkeypatch.setattr(gather, "_resolver", _resolver(answers, asked))
    remote = gather._resolve(["debian:12", oci, pinned], {"debian:12": ENTRY}, [])
    assert sorted(asked) == sorted([SOURCE, oci])
    assert [(r.ref, r.digest) for r in remote] == [(SOURCE, "sha256:" + "a" * 64)]

    asked.clear()
    installed = [
        InstalledEnvironment(
            name="debian:12", version="1.0.0", digest=SPEC_DIGEST, content_digest=SPEC_DIGEST
        )
    ]
    assert gather._resolve(["debian:12"], {"debian:12": ENTRY}, installed) == []
    assert asked == []
