"""Kernel builder logic: content digests, fragment verification, cache hits (no compiler)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyro.environments.build import kernel
from pyro.environments.build.kernel import (
    KernelSource,
    build_kernel,
    build_kernel_info,
    check_fragment,
    dropped_options,
    kernel_digest,
    parse_config,
)
from pyro.errors import BuildError
from pyro.spec.environment import KernelSpec

SOURCE = KernelSource("linux-source-6.1", "6.1.192-2", Path("/usr/src/linux-source-6.1.tar.xz"))
FRAGMENT = b"CONFIG_64BIT=y\nCONFIG_EXT4_FS=y\n"


def test_digest_is_stable_for_the_same_inputs() -> None:
    assert kernel_digest(FRAGMENT, SOURCE) == kernel_digest(bytes(FRAGMENT), SOURCE)
    assert kernel_digest(FRAGMENT, SOURCE).startswith("sha256:")


@pytest.mark.parametrize(
    ("fragment", "source"),
    [
        (FRAGMENT + b"CONFIG_IPV6=y\n", SOURCE),
        (FRAGMENT.replace(b"\n", b"\r\n"), SOURCE),
        (FRAGMENT, KernelSource(SOURCE.package, "6.1.193-1", SOURCE.tarball)),
        (FRAGMENT, KernelSource("linux-source-6.2", SOURCE.version, SOURCE.tarball)),
    ],
)
def test_digest_changes_with_any_input(fragment: bytes, source: KernelSource) -> None:
    assert kernel_digest(fragment, source) != kernel_digest(FRAGMENT, SOURCE)


def test_digest_changes_with_the_recipe_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = kernel_digest(FRAGMENT, SOURCE)
    monkeypatch.setattr(kernel, "KERNEL_RECIPE_VERSION", "kernel/999")
    assert kernel_digest(FRAGMENT, SOURCE) != before


def test_parse_config_reads_set_and_unset_lines() -> None:
    text = '# comment\nCONFIG_A=y\nCONFIG_B="x y"\n# CONFIG_C is not set\nCONFIG_N=32\n'
    assert parse_config(text) == {
        "CONFIG_A": "y",
        "CONFIG_B": '"x y"',
        "CONFIG_C": "n",
        "CONFIG_N": "32",
    }


def test_every_honoured_setting_passes() -> None:
    fragment = "CONFIG_BLOCK=y\nCONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=32\nCONFIG_PCI=n\nCONFIG_VT=n\n"
    config = "CONFIG_BLOCK=y\nCONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=32\n# CONFIG_PCI is not set\n"
    assert dropped_options(fragment, config) == []


def test_dropped_options_are_named() -> None:
    # EXT4 needs BLOCK: Kconfig leaves EXT4_FS out of .config entirely.
    fragment = "CONFIG_BLOCK=n\nCONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=32\nCONFIG_VT=n\n"
    config = "# CONFIG_BLOCK is not set\nCONFIG_NR_CPUS=8\nCONFIG_VT=y\n"
    assert dropped_options(fragment, config) == [
        "CONFIG_EXT4_FS=y (not set)",
        "CONFIG_NR_CPUS=32 (8)",
        "CONFIG_VT=n (y)",
    ]


def test_check_fragment_raises_a_build_error_naming_the_option() -> None:
    with pytest.raises(BuildError) as caught:
        check_fragment("CONFIG_EXT4_FS=y\n", "# CONFIG_BLOCK is not set\n", Path("frag.config"))
    assert "CONFIG_EXT4_FS=y" in caught.value.summary
    assert "frag.config" in caught.value.summary
    assert "depend" in caught.value.hint


def _fake_spec_dir(tmp_path: Path, fragment: bytes = FRAGMENT) -> tuple[KernelSpec, Path]:
    spec_dir = tmp_path / "spec"
    (spec_dir / "kernels").mkdir(parents=True)
    (spec_dir / "kernels" / "f.config").write_bytes(fragment)
    return KernelSpec(fragment="kernels/f.config"), spec_dir


def test_a_cached_kernel_is_returned_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "source_for", lambda package: SOURCE)
    spec, spec_dir = _fake_spec_dir(tmp_path)
    digest = kernel_digest(FRAGMENT, SOURCE)
    final = tmp_path / "cache" / "kernels" / digest.removeprefix("sha256:")
    final.mkdir(parents=True)
    (final / "vmlinux").write_bytes(b"\x7fELF fake")
    (final / "build.json").write_text(json.dumps({"release": "6.1.192"}))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not build")

    monkeypatch.setattr(kernel, "_build", no_build)
    messages: list[str] = []
    built = build_kernel_info(spec, spec_dir, cache_root=tmp_path / "cache", log=messages.append)
    assert built.vmlinux == final / "vmlinux"
    assert (built.digest, built.release) == (digest, "6.1.192")
    assert messages and "cached" in messages[0]


def test_an_incomplete_cache_entry_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "source_for", lambda package: SOURCE)
    spec, spec_dir = _fake_spec_dir(tmp_path)
    final = tmp_path / "cache" / "kernels" / kernel_digest(FRAGMENT, SOURCE).removeprefix("sha256:")
    final.mkdir(parents=True)
    (final / "vmlinux").write_bytes(b"half-written, no build.json")
    calls: list[str] = []

    def fake_build(fragment: bytes, *args: object) -> None:
        calls.append("build")
        (final / "build.json").write_text(json.dumps({"release": "r"}))

    monkeypatch.setattr(kernel, "_build", fake_build)
    assert build_kernel(spec, spec_dir, cache_root=tmp_path / "cache") == final / "vmlinux"
    assert calls == ["build"]


def test_a_missing_fragment_is_a_build_error(tmp_path: Path) -> None:
    spec = KernelSpec(fragment="kernels/absent.config")
    with pytest.raises(BuildError) as caught:
        build_kernel(spec, tmp_path, cache_root=tmp_path / "cache")
    assert "absent.config" in caught.value.summary
