"""The catalog: package-data specs, digests, lookups, registry sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyro.environments import catalog as catalog_module
from pyro.environments.catalog import (
    REGISTRY_ENV,
    can_build,
    catalog,
    catalog_entries,
    entry_from_path,
    entry_from_spec,
    lookup,
    spec_digest,
)
from pyro.errors import EnvironmentNotFoundError, SpecError, UsageError
from pyro.spec.environment import EnvironmentSpec, SourceSpec

NAMES = ["debian:12", "debian:12-base", "debian:12-build"]

SPEC_YAML = """\
apiVersion: pyro/v1
kind: Environment
metadata: {name: "mine:1"}
spec:
  version: 0.1.0
  kernel: {fragment: kernel.config}
  rootfs: {packages: [curl], sizeMiB: 768}
  defaults: {vcpus: 2, memoryMiB: 384}
"""


@pytest.fixture(autouse=True)
def _no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REGISTRY_ENV, raising=False)


def test_the_catalog_holds_the_three_checked_in_environments() -> None:
    entries = catalog()
    assert list(entries) == NAMES
    for name, entry in entries.items():
        assert entry.name == entry.spec.metadata.name == name
        assert (entry.spec_dir / entry.spec.spec.kernel.fragment).is_file()
        assert entry.spec_digest.startswith("sha256:") and len(entry.spec_digest) == 71
        assert entry.source is None


def test_debian_12_has_git() -> None:
    assert "git" in lookup("debian:12").spec.spec.rootfs.packages


def test_digests_differ_between_entries_and_are_stable() -> None:
    first = {name: entry.spec_digest for name, entry in catalog().items()}
    assert len(set(first.values())) == 3
    assert first == {name: entry.spec_digest for name, entry in catalog().items()}


def _spec_dir(tmp_path: Path, fragment: bytes = b"CONFIG_64BIT=y\n") -> Path:
    (tmp_path / "kernel.config").write_bytes(fragment)
    (tmp_path / "env.yaml").write_text(SPEC_YAML)
    return tmp_path


def test_spec_digest_changes_with_the_spec_the_fragment_and_the_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _spec_dir(tmp_path)
    spec = entry_from_path(folder / "env.yaml").spec
    base = spec_digest(spec, folder)
    assert spec_digest(spec, folder) == base

    body = spec.spec.model_copy(update={"version": "0.1.1"})
    assert spec_digest(spec.model_copy(update={"spec": body}), folder) != base

    rootfs = spec.spec.rootfs.model_copy(update={"packages": ["curl", "jq"]})
    changed = spec.model_copy(update={"spec": spec.spec.model_copy(update={"rootfs": rootfs})})
    assert spec_digest(changed, folder) != base

    (folder / "kernel.config").write_bytes(b"CONFIG_64BIT=y\nCONFIG_IPV6=y\n")
    assert spec_digest(spec, folder) != base
    (folder / "kernel.config").write_bytes(b"CONFIG_64BIT=y\n")
    assert spec_digest(spec, folder) == base

    monkeypatch.setattr(catalog_module, "BUILDER_VERSION", "kernel/9+rootfs/9")
    assert spec_digest(spec, folder) != base


def test_a_spec_given_by_path_becomes_an_entry(tmp_path: Path) -> None:
    folder = _spec_dir(tmp_path)
    entry = entry_from_path(folder / "env.yaml")
    assert (entry.name, entry.spec_dir) == ("mine:1", folder.resolve())
    assert entry.spec.spec.rootfs.size_mib == 768
    assert entry == entry_from_spec(entry.spec, folder.resolve())


def test_a_missing_fragment_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text(SPEC_YAML)
    with pytest.raises(SpecError) as caught:
        entry_from_path(tmp_path / "env.yaml")
    assert "kernel.config" in caught.value.summary
    assert caught.value.issues[0].pointer == "/spec/kernel/fragment"


def test_a_run_spec_is_not_an_environment(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: r}\n"
        "spec: {environment: debian:12, steps: [{name: s, run: 'true'}]}\n"
    )
    with pytest.raises(SpecError, match="expected an Environment"):
        entry_from_path(run)


def test_lookup_suggests_close_names() -> None:
    with pytest.raises(EnvironmentNotFoundError) as caught:
        lookup("debian:12-bild")
    assert "'debian:12-build'" in caught.value.summary
    assert "debian:12-base" in caught.value.hint


def test_lookup_of_a_far_name_lists_the_catalog() -> None:
    with pytest.raises(EnvironmentNotFoundError) as caught:
        lookup("alpine")
    assert "did you mean" not in caught.value.summary
    assert "debian:12" in caught.value.hint


def test_the_registry_variable_gives_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_ENV, "127.0.0.1:5000/pyro/")
    assert lookup("debian:12").source == "oci://127.0.0.1:5000/pyro/debian:12"
    assert lookup("debian:12-base").source == "oci://127.0.0.1:5000/pyro/debian:12-base"


def test_a_spec_source_wins_over_the_registry_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REGISTRY_ENV, "127.0.0.1:5000/pyro")
    spec = entry_from_path(_spec_dir(tmp_path) / "env.yaml").spec
    own = SourceSpec(ref="oci://127.0.0.1:6000/other/mine:1")
    spec = spec.model_copy(update={"spec": spec.spec.model_copy(update={"source": own})})
    assert entry_from_spec(spec, tmp_path).source == "oci://127.0.0.1:6000/other/mine:1"


def test_a_malformed_registry_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REGISTRY_ENV, "not a registry")
    with pytest.raises(UsageError) as caught:
        catalog()
    assert REGISTRY_ENV in caught.value.summary


def test_catalog_entries_feed_the_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "can_build", lambda: (True, ""))
    entries = {entry.name: entry for entry in catalog_entries()}
    assert list(entries) == NAMES
    build = entries["debian:12-build"]
    assert (build.ref, build.version, build.buildable) == ("debian:12-build", "1.0.0", True)
    assert (build.default_vcpus, build.default_memory_mib) == (2, 1024)
    assert build.spec_digest == lookup("debian:12-build").spec_digest


def test_can_build_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    ok, reason = can_build()
    assert not ok
    assert "mmdebstrap" in reason and "mkfs.ext4 (e2fsprogs)" in reason


def test_specs_are_package_data() -> None:
    folder = catalog_module.catalog_dir()
    assert sorted(p.name for p in folder.glob("*.yaml")) == [
        "debian-12-base.yaml",
        "debian-12-build.yaml",
        "debian-12.yaml",
    ]
    assert isinstance(lookup("debian:12").spec, EnvironmentSpec)


def _copy_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import shutil

    folder = tmp_path / "catalog"
    shutil.copytree(catalog_module.catalog_dir(), folder, ignore=shutil.ignore_patterns("*.pyc"))
    monkeypatch.setattr(catalog_module, "catalog_dir", lambda: folder)
    catalog_module._package_specs.cache_clear()
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    return folder


def test_inventory_entries_come_from_the_summary_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_catalog(tmp_path, monkeypatch)
    first = catalog_entries()
    assert (tmp_path / "cache" / f"catalog-summary-{catalog_module._SUMMARY_FORMAT}.json").is_file()
    # each entry carries the document a plan's build step will build
    documents = {name: entry.spec for name, entry in catalog_module.catalog().items()}
    assert {entry.name: entry.document for entry in first} == documents
    assert {entry.folder for entry in first} == {None}

    def no_parse() -> None:
        raise AssertionError("the specs were parsed again")

    catalog_module._package_specs.cache_clear()
    monkeypatch.setattr(catalog_module, "_package_specs", no_parse)
    assert catalog_entries() == first
    # $PYRO_ENV_REGISTRY is applied to the summary, not baked into it.
    monkeypatch.setenv(REGISTRY_ENV, "127.0.0.1:5000/pyro")
    sources = {entry.name: entry.source for entry in catalog_entries()}
    assert sources["debian:12"] == "oci://127.0.0.1:5000/pyro/debian:12"


def test_an_edited_spec_or_fragment_is_never_served_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy_catalog(tmp_path, monkeypatch)
    before = {entry.name: entry for entry in catalog_entries()}
    spec = folder / "debian-12.yaml"
    spec.write_text(spec.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    catalog_module._package_specs.cache_clear()
    after = {entry.name: entry for entry in catalog_entries()}
    assert after["debian:12"].version == "1.0.1"
    assert after["debian:12"].spec_digest != before["debian:12"].spec_digest
    fragment = folder / "kernels" / "pyro-6.1.config"
    fragment.write_text(fragment.read_text() + "\n# changed\n")
    catalog_module._package_specs.cache_clear()
    changed = {entry.name: entry for entry in catalog_entries()}
    assert changed["debian:12-base"].spec_digest != after["debian:12-base"].spec_digest
    assert changed["debian:12"].spec_digest == lookup("debian:12").spec_digest


def test_a_corrupt_summary_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_catalog(tmp_path, monkeypatch)
    expected = catalog_entries()
    store = tmp_path / "cache" / f"catalog-summary-{catalog_module._SUMMARY_FORMAT}.json"
    for garbage in ("{not json", '{"key": 1}', "[]", '{"key": "x", "summaries": 3}'):
        store.write_text(garbage)
        assert catalog_entries() == expected
        assert json.loads(store.read_text())["summaries"][0]["name"] == "debian:12"
