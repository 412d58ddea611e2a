"""The environment cache: installs are atomic, content-addressed and never used when broken."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyro.environments.cache.prune import prune
from pyro.environments.cache.store import Cache, Install, slug
from pyro.errors import CacheError, EnvironmentInvalidError

NAME = "fake:1"


def stage(where: Path, kernel: bytes = b"K" * 4096, rootfs: bytes = b"R" * 65536) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "vmlinux").write_bytes(kernel)
    (where / "rootfs.ext4").write_bytes(rootfs)
    return where


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))  # no real VMs pin installs
    return Cache(tmp_path / "cache")


@pytest.fixture
def installed(cache: Cache, tmp_path: Path) -> Install:
    meta = {"version": "1.2.3", "spec_digest": "sha256:" + "a" * 64, "extra": Path("/x")}
    return cache.install(NAME, stage(tmp_path / "stage"), meta)


def no_symlinks(root: Path) -> bool:
    return not any(
        os.path.islink(os.path.join(d, n)) for d, dirs, files in os.walk(root) for n in dirs + files
    )


# -- a good install ----------------------------------------------------------------------


def test_install_layout_and_manifest(cache: Cache, installed: Install) -> None:
    data = (installed.dir / "manifest.json").read_bytes()
    assert installed.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert installed.dir == cache.root / "environments" / slug(NAME) / installed.digest[7:]
    manifest = json.loads(data)
    assert manifest["name"] == NAME and manifest["version"] == "1.2.3"
    assert manifest["specDigest"] == "sha256:" + "a" * 64
    assert manifest["createdFrom"] == {"extra": "/x"}
    kernel = manifest["artifacts"]["kernel"]
    assert kernel["file"] == "vmlinux" and kernel["size"] == 4096
    assert kernel["sha256"] == "sha256:" + hashlib.sha256(b"K" * 4096).hexdigest()
    current = json.loads((installed.dir.parent / "current.json").read_text())
    assert current == {"name": NAME, "digest": installed.digest}
    assert no_symlinks(cache.root)
    assert os.listdir(cache.root / "tmp") == []


def test_lookup_status_verify_installed(cache: Cache, installed: Install) -> None:
    assert cache.lookup(NAME) == installed
    assert cache.status(NAME).state == "installed"
    assert cache.verify(NAME) == installed
    [entry] = cache.installed()
    assert (entry.name, entry.version, entry.digest) == (NAME, "1.2.3", installed.digest)
    assert entry.spec_digest == "sha256:" + "a" * 64


def test_unknown_name_is_not_installed(cache: Cache) -> None:
    assert cache.status("other:1").state == "not-installed"
    assert cache.lookup("other:1") is None
    with pytest.raises(EnvironmentInvalidError, match="not installed"):
        cache.verify("other:1")


def test_same_content_same_digest_and_reinstall_is_idempotent(
    cache: Cache, installed: Install, tmp_path: Path
) -> None:
    meta = {"version": "1.2.3", "spec_digest": "sha256:" + "a" * 64, "extra": "/x"}
    again = cache.install(NAME, stage(tmp_path / "stage2"), meta)
    assert again.digest == installed.digest
    assert cache.verify(NAME).digest == installed.digest


def test_the_content_digest_names_the_bytes_not_the_manifest(
    cache: Cache, installed: Install, tmp_path: Path
) -> None:
    """Plans pin the content digest: another machine's install of the same kernel and rootfs
    (pulled, so its manifest records a source) has another install digest but the same
    content digest; other bytes have another content digest."""
    other = Cache(tmp_path / "other-cache")
    pulled_meta = {"version": "1.2.3", "source": "oci://r.example/pyro/fake:1@sha256:" + "b" * 64}
    pulled = other.install(NAME, stage(tmp_path / "stage2"), pulled_meta)
    assert pulled.digest != installed.digest
    assert pulled.content_digest == installed.content_digest
    kernel = "sha256:" + hashlib.sha256(b"K" * 4096).hexdigest()
    rootfs = "sha256:" + hashlib.sha256(b"R" * 65536).hexdigest()
    body = json.dumps({"kernel": kernel, "rootfs": rootfs}, separators=(",", ":"))
    assert installed.content_digest == "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    assert cache.installed()[0].content_digest == installed.content_digest
    rebuilt = cache.install(NAME, stage(tmp_path / "stage3", rootfs=b"S" * 65536), {"version": "1"})
    assert rebuilt.content_digest != installed.content_digest


def test_slugs_do_not_collide() -> None:
    assert slug("debian:12") != slug("debian_12")
    assert "/" not in slug("oci://127.0.0.1:5000/pyro/debian:12")


def test_staged_symlink_is_refused(cache: Cache, tmp_path: Path) -> None:
    staged = stage(tmp_path / "stage")
    (staged / "rootfs.ext4").unlink()
    (staged / "rootfs.ext4").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CacheError, match="symlink"):
        cache.install(NAME, staged, {"version": "1.0.0"})
    assert cache.lookup(NAME) is None


# -- every corruption is detected, never used, and repaired by the next install ----------


def _empty_install_dir(i: Install) -> None:
    for child in i.dir.iterdir():
        child.unlink()


def _missing_kernel(i: Install) -> None:
    i.kernel.unlink()


def _truncated_rootfs(i: Install) -> None:
    os.truncate(i.rootfs, 100)


def _broken_symlink_rootfs(i: Install) -> None:
    i.rootfs.unlink()
    i.rootfs.symlink_to(i.dir / "does-not-exist")


def _symlink_to_good_copy(i: Install) -> None:
    good = i.dir.parent.parent / "copy.ext4"
    good.write_bytes(i.rootfs.read_bytes())
    i.rootfs.unlink()
    i.rootfs.symlink_to(good)


def _manifest_missing(i: Install) -> None:
    (i.dir / "manifest.json").unlink()


def _manifest_edited(i: Install) -> None:
    manifest = json.loads((i.dir / "manifest.json").read_text())
    manifest["artifacts"]["rootfs"]["sha256"] = "sha256:" + "0" * 64
    (i.dir / "manifest.json").write_text(json.dumps(manifest))


def _manifest_wrong_digest_consistently(i: Install) -> None:
    """A manifest listing a wrong sha256, re-addressed so its own digest checks out."""
    manifest = json.loads((i.dir / "manifest.json").read_text())
    manifest["artifacts"]["rootfs"]["sha256"] = "sha256:" + "0" * 64
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (i.dir / "manifest.json").write_bytes(data)
    i.dir.rename(i.dir.parent / digest[7:])
    (i.dir.parent / "current.json").write_text(json.dumps({"name": NAME, "digest": digest}))


def _rootfs_rewritten_same_size(i: Install) -> None:
    size = i.rootfs.stat().st_size
    i.rootfs.write_bytes(b"X" * size)


def _current_points_at_nothing(i: Install) -> None:
    current = {"name": NAME, "digest": "sha256:" + "f" * 64}
    (i.dir.parent / "current.json").write_text(json.dumps(current))


def _current_missing(i: Install) -> None:
    (i.dir.parent / "current.json").unlink()


def _current_garbage(i: Install) -> None:
    (i.dir.parent / "current.json").write_text("{not json")


def _install_dir_is_symlink(i: Install) -> None:
    moved = i.dir.parent.parent / "moved"
    i.dir.rename(moved)
    i.dir.symlink_to(moved)


CORRUPTIONS: dict[str, Callable[[Install], None]] = {
    "empty install dir": _empty_install_dir,
    "missing kernel": _missing_kernel,
    "truncated rootfs": _truncated_rootfs,
    "rootfs is a broken symlink": _broken_symlink_rootfs,
    "rootfs is a symlink to a good copy": _symlink_to_good_copy,
    "manifest missing": _manifest_missing,
    "manifest edited": _manifest_edited,
    "manifest lists a wrong digest": _manifest_wrong_digest_consistently,
    "rootfs rewritten, same size": _rootfs_rewritten_same_size,
    "current.json points at nothing": _current_points_at_nothing,
    "current.json missing": _current_missing,
    "current.json garbage": _current_garbage,
    "install dir is a symlink": _install_dir_is_symlink,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corruption_is_detected_and_repaired(
    corrupt: Callable[[Install], None], cache: Cache, installed: Install, tmp_path: Path
) -> None:
    corrupt(installed)

    status = cache.status(NAME)
    assert status.state == "invalid", status
    assert status.reason
    assert cache.lookup(NAME) is None
    assert cache.installed() == []
    with pytest.raises(EnvironmentInvalidError, match="invalid"):
        cache.verify(NAME)

    repaired = cache.install(
        NAME,
        stage(tmp_path / "again"),
        {"version": "1.2.3", "spec_digest": "sha256:" + "a" * 64, "extra": "/x"},
    )
    assert repaired.digest == installed.digest
    assert cache.verify(NAME) == repaired
    assert repaired.rootfs.read_bytes() == b"R" * 65536
    assert no_symlinks(cache.environments_dir)


def test_bit_flip_with_mtime_put_back_is_caught_by_the_quick_check(
    cache: Cache, installed: Install
) -> None:
    """The mtime can be set back; the ctime cannot, and the quick check compares it."""
    before = os.stat(installed.rootfs)
    with open(installed.rootfs, "r+b") as handle:
        handle.write(b"Z")
    os.utime(installed.rootfs, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(installed.rootfs).st_mtime_ns == before.st_mtime_ns
    assert cache.lookup(NAME) is None
    assert cache.status(NAME).state == "invalid"
    with pytest.raises(EnvironmentInvalidError, match=r"rootfs\.ext4 does not match"):
        cache.verify(NAME)


def test_a_failed_full_verify_is_remembered_by_the_quick_check(
    cache: Cache, installed: Install
) -> None:
    """A change the stat signature cannot show (same size, mtime, ctime: here the
    signature is rewritten to match) passes the quick check until --verify hashes it."""
    from pyro.environments.cache.files import record_verified

    with open(installed.rootfs, "r+b") as handle:
        handle.write(b"Z")
    record_verified(installed.rootfs.parent, installed.digest)
    assert cache.lookup(NAME) is not None
    with pytest.raises(EnvironmentInvalidError, match=r"rootfs\.ext4 does not match"):
        cache.verify(NAME)
    assert cache.status(NAME).state == "invalid"
    assert cache.lookup(NAME) is None


def test_empty_or_partial_seeded_directory_never_wins(cache: Cache, tmp_path: Path) -> None:
    """A package-data-like directory dropped into the cache is ignored, then replaced."""
    seeded = cache.slug_dir(NAME)
    seeded.mkdir(parents=True)
    assert cache.status(NAME).state == "invalid"
    (seeded / "vmlinux").symlink_to("/nonexistent/vmlinux")
    (seeded / "rootfs.ext4").write_bytes(b"")
    (seeded / ("0" * 64)).mkdir()
    assert cache.status(NAME).state == "invalid"
    assert cache.installed() == []

    install = cache.install(NAME, stage(tmp_path / "stage"), {"version": "1.0.0"})
    assert cache.verify(NAME) == install
    assert sorted(os.listdir(seeded)) == sorted(["current.json", install.digest[7:]])
    assert no_symlinks(cache.root)


# -- tmp dirs and prune ------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_tmp_dirs_go_live_ones_stay(cache: Cache, installed: Install, tmp_path: Path) -> None:
    stale = cache.tmp_root / f"{_dead_pid()}-interrupted"
    stale.mkdir(parents=True)
    (stale / "rootfs.ext4").write_bytes(b"half")
    builder = cache.tmp_root / "kernel-abc123"  # another writer's dir: no pid in its name
    builder.mkdir()
    live = cache.tmp_root / f"{os.getpid()}-working"
    live.mkdir()

    cache.install("other:1", stage(tmp_path / "s2"), {"version": "1.0.0"})
    assert not stale.exists()
    assert live.exists() and builder.exists()
    assert cache.lookup(NAME) == installed

    assert prune(cache) == []  # a fresh builder dir may be in use
    day_old = time.time() - 2 * 86400
    os.utime(builder, (day_old, day_old))
    assert [item.path for item in prune(cache)] == [builder]


def test_prune(cache: Cache, installed: Install, tmp_path: Path) -> None:
    newer = cache.install(NAME, stage(tmp_path / "s2", rootfs=b"N" * 100), {"version": "2.0.0"})
    broken = cache.install("broken:1", stage(tmp_path / "s3"), {"version": "1.0.0"})
    broken.kernel.unlink()
    stale = cache.tmp_root / f"{_dead_pid()}-x"
    stale.mkdir(parents=True)
    stray = cache.environments_dir / "stray-file"
    stray.write_text("?")

    pruned = {item.path: item.reason for item in prune(cache)}

    assert installed.dir in pruned and pruned[installed.dir] == "old install"
    assert broken.dir.parent in pruned and "invalid" in pruned[broken.dir.parent]
    assert stale in pruned and stray in pruned
    assert cache.verify(NAME) == newer
    assert not installed.dir.exists() and not broken.dir.parent.exists()
    assert prune(cache) == []


def test_install_from_links_same_content(cache: Cache, installed: Install) -> None:
    alias = cache.install_from("alias:1", installed)
    assert alias.digest == installed.digest
    assert os.stat(alias.rootfs).st_ino == os.stat(installed.rootfs).st_ino
    assert cache.verify("alias:1") == alias
    assert [e.name for e in cache.installed()] == ["alias:1", NAME]


def test_known_digests_give_the_same_install(cache: Cache, tmp_path: Path) -> None:
    hashed = cache.install("a:1", stage(tmp_path / "s1"), {"version": "1.0.0"})
    known = {
        "vmlinux": "sha256:" + hashlib.sha256(b"K" * 4096).hexdigest(),
        "rootfs.ext4": "sha256:" + hashlib.sha256(b"R" * 65536).hexdigest(),
    }
    trusted = cache.install("a:1", stage(tmp_path / "s2"), {"version": "1.0.0"}, digests=known)
    assert trusted.digest == hashed.digest
    assert cache.verify("a:1") == trusted


def test_prune_keeps_installs_a_vm_boots_from(
    cache: Cache, installed: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    record = state / "vms" / "vm1" / "vm.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"id": "vm1", "rootfs": str(installed.rootfs)}))
    monkeypatch.setenv("PYRO_STATE_DIR", str(state))
    newer = cache.install(NAME, stage(tmp_path / "s2", rootfs=b"N" * 100), {"version": "2.0.0"})

    assert prune(cache) == []
    assert installed.dir.is_dir()

    record.unlink()
    assert [item.path for item in prune(cache)] == [installed.dir]
    assert cache.verify(NAME) == newer
