"""Real builds: the guest kernel from linux-source, Debian root filesystems with mmdebstrap.

Slow (a first kernel build takes minutes on 2 cores) and needs root, the host build tools
and the Debian mirror. Set PYRO_TEST_BUILD_CACHE to a folder to keep the build cache
(kernel source tree, apt archives) between runs; otherwise a temporary one is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.environments.build.builder import build_environment
from pyro.environments.build.kernel import (
    build_kernel_info,
    check_fragment,
    configure,
    source_for,
    source_tree,
)
from pyro.environments.build.rootfs import build_rootfs
from pyro.environments.catalog import can_build, lookup
from pyro.errors import BuildError

_OK, _WHY = can_build()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _OK, reason=f"host cannot build environments: {_WHY}"),
]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    kept = os.environ.get("PYRO_TEST_BUILD_CACHE")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        yield Path(kept)
        return
    root = tmp_path_factory.mktemp("build-cache")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _tool(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _debugfs(image: Path, command: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


def test_the_kernel_builds_once_then_is_a_cache_hit(cache_root: Path) -> None:
    entry = lookup("debian:12")
    messages: list[str] = []
    first = build_kernel_info(entry.spec.spec.kernel, entry.spec_dir, cache_root=cache_root)
    stamp = first.vmlinux.stat().st_mtime_ns
    again = build_kernel_info(
        entry.spec.spec.kernel, entry.spec_dir, cache_root=cache_root, log=messages.append
    )
    assert again.vmlinux == first.vmlinux and again.digest == first.digest
    assert again.vmlinux.stat().st_mtime_ns == stamp
    assert messages == [f"kernel {first.digest[:19]} cached"]

    header = first.vmlinux.read_bytes()[:4]
    assert header == b"\x7fELF"
    sections = _tool("readelf", "-S", "-W", str(first.vmlinux))
    assert ".symtab" not in sections, "vmlinux must be stripped"
    # The Xen ELF note carries the PVH entry point QEMU microvm and Firecracker boot from.
    assert "Xen" in _tool("readelf", "-n", str(first.vmlinux))

    meta = json.loads((first.vmlinux.parent / "build.json").read_text())
    assert meta["release"].startswith("6.1.")
    assert meta["inputs"]["packageVersion"] == source_for("linux-source-6.1").version
    assert meta["digest"] == first.digest
    config = (first.vmlinux.parent / ".config").read_text()
    assert "CONFIG_EXT4_FS=y" in config and "CONFIG_VIRTIO_MMIO=y" in config


def test_kconfig_dropping_a_fragment_option_is_a_build_error(
    cache_root: Path, tmp_path: Path
) -> None:
    source = source_for("linux-source-6.1")
    log_path = tmp_path / "configure.log"
    src = source_tree(source, cache_root, log_path, None)
    fragment = tmp_path / "broken.config"
    # EXT4 depends on BLOCK: with BLOCK off Kconfig silently leaves EXT4 out.
    fragment.write_text("CONFIG_64BIT=y\nCONFIG_BLOCK=n\nCONFIG_EXT4_FS=y\n")
    config = configure(src, tmp_path / "obj", fragment, log_path)
    with pytest.raises(BuildError) as caught:
        check_fragment(fragment.read_text(), config, fragment)
    assert "CONFIG_EXT4_FS=y" in caught.value.summary
    assert "CONFIG_BLOCK" not in caught.value.summary


def test_the_base_rootfs_is_a_clean_ext4_image(cache_root: Path, tmp_path: Path) -> None:
    spec = lookup("debian:12-base").spec.spec.rootfs
    image = tmp_path / "rootfs.ext4"
    info = build_rootfs(spec, image, cache_root=cache_root)
    assert info.image == image and info.image_bytes == spec.size_mib << 20

    header = _tool("dumpe2fs", "-h", str(image))
    assert "Filesystem volume name:   pyro-root" in header
    assert f"Filesystem UUID:          {info.uuid}" in header
    assert "extent" in header and "has_journal" in header
    subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, check=True)

    assert "dpkg" in info.packages and "git" not in info.packages
    assert info.release_date, "the suite's Release date is recorded"
    assert "Type: directory" in _debugfs(image, "stat /workspace")
    assert "Type: regular" in _debugfs(image, "stat /etc/hostname")
    assert "pyro" in _debugfs(image, "cat /etc/hostname")
    assert "File not found" in _debugfs(image, "stat /usr/share/man/man1/ls.1.gz")
    assert not list((cache_root / "tmp").iterdir()), "work dirs are removed"


def test_debian_12_has_git_and_shares_the_cached_kernel(cache_root: Path, tmp_path: Path) -> None:
    entry = lookup("debian:12")
    built = build_environment(entry, tmp_path / "out", cache_root=cache_root)
    assert built.kernel == tmp_path / "out" / "vmlinux"
    assert built.rootfs == tmp_path / "out" / "rootfs.ext4"
    cached = cache_root / "kernels" / built.kernel_digest.removeprefix("sha256:") / "vmlinux"
    assert built.kernel.read_bytes() == cached.read_bytes()
    assert "Type: regular" in _debugfs(built.rootfs, "stat /usr/bin/git")
    assert "git" in built.packages and "ca-certificates" in built.packages
    meta = json.loads(json.dumps(built.to_dict()))
    assert meta["name"] == "debian:12" and meta["specDigest"] == entry.spec_digest
    assert meta["kernel"]["release"].startswith("6.1.")
