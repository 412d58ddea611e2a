"""Rootfs builder logic: deterministic ids, the mmdebstrap command, tree finishing, mkfs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyro.environments.build import rootfs
from pyro.environments.build.rootfs import (
    SOURCE_DATE_EPOCH,
    RootfsInfo,
    mmdebstrap_argv,
    rootfs_uuid,
)
from pyro.errors import BuildError
from pyro.spec.environment import RootfsSpec

SPEC = RootfsSpec(packages=["git", "ca-certificates"], sizeMiB=1024)


def test_the_filesystem_uuid_is_deterministic() -> None:
    assert rootfs_uuid(SPEC) == rootfs_uuid(RootfsSpec(packages=["git", "ca-certificates"]))


@pytest.mark.parametrize(
    "other",
    [
        RootfsSpec(packages=["git"], sizeMiB=1024),
        RootfsSpec(packages=["git", "ca-certificates"], sizeMiB=2048),
        RootfsSpec(packages=["git", "ca-certificates"], variant="apt"),
    ],
)
def test_the_filesystem_uuid_changes_with_the_spec(other: RootfsSpec) -> None:
    assert rootfs_uuid(other) != rootfs_uuid(SPEC)


def test_the_uuid_changes_with_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = rootfs_uuid(SPEC)
    monkeypatch.setattr(rootfs, "ROOTFS_RECIPE_VERSION", "rootfs/999")
    assert rootfs_uuid(SPEC) != before


def test_mmdebstrap_gets_variant_sorted_packages_cache_hooks_and_suite() -> None:
    argv = mmdebstrap_argv(SPEC, Path("/w/tree"), Path("/c/apt"))
    assert argv[0] == "mmdebstrap"
    assert "--variant=minbase" in argv
    assert "--include=ca-certificates,git" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert "--setup-hook=sync-in /c/apt /var/cache/apt/archives/" in argv
    assert "--customize-hook=sync-out /var/cache/apt/archives /c/apt" in argv
    assert argv[-2:] == ["bookworm", "/w/tree"]


def test_no_include_without_packages() -> None:
    argv = mmdebstrap_argv(RootfsSpec(), Path("/t"), Path("/c"))
    assert not [arg for arg in argv if arg.startswith("--include")]


def _fake_tree(root: Path) -> Path:
    tree = root / "tree"
    for name in ("bin", "etc", "dev", "proc", "sys", "var/lib/apt/lists/partial"):
        (tree / name).mkdir(parents=True)
    (tree / "bin" / "sh").write_text("#!fake\n")
    (tree / "etc" / "resolv.conf").symlink_to("/run/host-resolv.conf")
    lists = tree / "var" / "lib" / "apt" / "lists"
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text(
        "Origin: Debian\nDate: Sat, 10 May 2025 09:00:00 UTC\n"
    )
    (lists / "deb.debian.org_debian_dists_bookworm-updates_InRelease").write_text(
        "Origin: Debian\nDate: Fri, 21 Nov 2026 20:00:00 UTC\n"
    )
    return tree


def test_release_date_comes_from_the_fetched_release_file(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path)
    assert rootfs._release_date(tree, "bookworm") == "Sat, 10 May 2025 09:00:00 UTC"
    assert rootfs._release_date(tmp_path / "empty", "bookworm") == ""


def test_finishing_writes_identity_files_and_clamps_times(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path)
    rootfs._finish_tree(tree)
    etc = tree / "etc"
    assert (etc / "hostname").read_text() == "pyro\n"
    assert "127.0.0.1\tlocalhost" in (etc / "hosts").read_text()
    assert (etc / "machine-id").read_text() == ""
    assert not (etc / "resolv.conf").is_symlink()
    assert (tree / "workspace").is_dir()
    assert oct((tree / "tmp").stat().st_mode & 0o7777) == "0o1777"
    assert list((tree / "var" / "lib" / "apt" / "lists").iterdir()) == [
        tree / "var" / "lib" / "apt" / "lists" / "partial"
    ]
    for path in [tree, *tree.rglob("*")]:
        assert os.lstat(path).st_mtime <= SOURCE_DATE_EPOCH, path


def test_a_tree_without_a_shell_is_refused(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path)
    (tree / "bin" / "sh").unlink()
    with pytest.raises(BuildError, match="bin/sh"):
        rootfs._finish_tree(tree)


def test_a_tree_too_big_for_size_mib_is_refused_with_a_size_hint() -> None:
    rootfs._check_fits(200 << 20, 8000, 512)
    with pytest.raises(BuildError) as caught:
        rootfs._check_fits(600 << 20, 8000, 512)
    assert "sizeMiB is 512" in caught.value.summary
    assert "sizeMiB to at least" in caught.value.hint


def test_info_serialises_with_camel_case_keys(tmp_path: Path) -> None:
    info = RootfsInfo(
        image=tmp_path / "rootfs.ext4",
        image_bytes=1,
        tree_bytes=2,
        size_mib=64,
        uuid="u",
        label="pyro-root",
        suite="bookworm",
        variant="minbase",
        release_date="d",
        source_date_epoch=SOURCE_DATE_EPOCH,
        packages={"git": "1:2.39.5-0+deb12u2"},
    )
    data = info.to_dict()
    assert data["image"] == str(tmp_path / "rootfs.ext4")
    assert data["sizeMiB"] == 64 and data["releaseDate"] == "d"
    assert data["packages"] == {"git": "1:2.39.5-0+deb12u2"}


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 (e2fsprogs) not installed")
def test_mkfs_makes_the_same_bytes_from_the_same_tree(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path)
    rootfs._finish_tree(tree)
    log = tmp_path / "build.log"
    fs_uuid = rootfs_uuid(SPEC)
    images = [tmp_path / "a.ext4", tmp_path / "b.ext4"]
    for image in images:
        rootfs._mkfs(tree, image, 64, fs_uuid, log)
    assert images[0].read_bytes() == images[1].read_bytes()
    header = subprocess.run(
        ["dumpe2fs", "-h", str(images[0])], capture_output=True, text=True, check=True
    ).stdout
    assert f"Filesystem UUID:          {fs_uuid}" in header
    assert "Filesystem volume name:   pyro-root" in header


def test_used_inodes_are_read_from_dumpe2fs_free_lists() -> None:
    output = (
        "Inode count:              24\n"
        "Group descriptor size:    64\n"
        "Inodes per group:         12\n"
        "Group 0: (Blocks 1-8192) csum 0xf9db\n"
        "  Free inodes: 3, 5-10\n"
        "Group 1: (Blocks 8193-16384) [INODE_UNINIT]\n"
        "  Free inodes: 13-14, 16-24\n"
    )
    # Groups hold 12 inodes each here; reserved inodes 1-10 except the root (2) are skipped.
    assert rootfs.used_inodes(output) == [2, 11, 12, 15]
