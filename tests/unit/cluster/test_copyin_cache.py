"""A node's copy-in cache stays within its bound: least recently used out first, never a
tar a run holds, and the partial downloads of a killed worker swept."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from pyro.cluster import copyin, copyin_cache
from pyro.cluster.worker import _unpack_copy_ins
from pyro.errors import PyroError

MIB = 1024 * 1024


def _tar(cache: Path, name: str, size: int, age_s: int) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{name}.tar"
    path.write_bytes(b"x" * size)
    stamp = 1_700_000_000 - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_prune_removes_the_least_recently_used_until_within_the_bound(tmp_path: Path) -> None:
    old, mid, new = (_tar(tmp_path, n, MIB, age) for n, age in (("a", 30), ("b", 20), ("c", 10)))
    assert copyin_cache.prune(tmp_path, 2 * MIB) == [old]
    assert (old.exists(), mid.exists(), new.exists()) == (False, True, True)
    assert copyin_cache.prune(tmp_path, 2 * MIB) == []


def test_prune_passes_over_a_tar_a_run_holds(tmp_path: Path) -> None:
    old = _tar(tmp_path, "a", MIB, 30)
    other = _tar(tmp_path, "b", MIB, 20)
    with open(old, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # as held() does while a run unpacks it
        assert copyin_cache.prune(tmp_path, 0) == [other]
    assert old.exists()
    assert copyin_cache.prune(tmp_path, 0) == [old]


def test_a_dead_workers_partial_download_is_swept_a_live_one_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{copyin_cache.PARTIAL_PREFIX}dead"
    live = tmp_path / f"{copyin_cache.PARTIAL_PREFIX}live"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    with open(live, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as fetch() does while it downloads
        assert copyin_cache.prune(tmp_path, 10 * MIB) == [dead]
    assert live.exists()


def test_the_bound_is_configured_in_mib_and_a_bad_value_is_the_default() -> None:
    assert copyin_cache.cache_max_bytes({}) == 8192 * MIB
    assert copyin_cache.cache_max_bytes({copyin_cache.CACHE_ENV: "3"}) == 3 * MIB
    for bad in ("-1", "lots", "9" * 12):
        assert copyin_cache.cache_max_bytes({copyin_cache.CACHE_ENV: bad}) == 8192 * MIB


def test_many_distinct_copy_ins_leave_the_node_cache_within_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry side (fetch) has its own tests; here it writes a distinct tar per run.
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYRO_CACHE_DIR", str(cache))
    monkeypatch.setenv(copyin_cache.CACHE_ENV, "3")
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(MIB))

    def fetch(descriptor: dict[str, Any], into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        target = into / f"{descriptor['digest'][7:]}.tar"
        with tarfile.open(target, "w") as tar:
            tar.add(source, arcname=f"f{descriptor['digest'][-1]}")
        return target

    monkeypatch.setattr(copyin_cache, "fetch", fetch)
    for run in range(5):
        base = tmp_path / f"run{run}"
        base.mkdir()
        _unpack_copy_ins({"digest": f"sha256:{run:064d}"}, base)
        assert (base / f"f{run}").stat().st_size == MIB
    kept = sorted(p.name[-5:] for p in (cache / "cluster-copy-in").glob("*.tar"))
    assert kept == [
        "3.tar",
        "4.tar",
    ]  # the two most recent fit in 3 MiB (a tar is a little over 1); earlier ones gone


def test_a_copy_in_larger_than_the_whole_cache_is_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(copyin_cache.CACHE_ENV, "1")
    kept = _tar(tmp_path, "a", MIB // 2, 30)
    # 127.0.0.1:1 answers nothing: a request would fail with another error.
    descriptor = {"ref": f"oci://127.0.0.1:1/x@sha256:{'b' * 64}", "digest": "sha256:" + "c" * 64}
    with (
        pytest.raises(PyroError, match=r"more than this node's copy-in cache holds") as caught,
        copyin_cache.held({**descriptor, "size": 2 * MIB}, tmp_path),
    ):
        pass
    assert copyin_cache.CACHE_ENV in caught.value.hint and kept.exists()


def test_room_is_made_before_a_download_and_the_tar_about_to_be_used_is_kept(
    tmp_path: Path,
) -> None:
    old, wanted, new = (_tar(tmp_path, n, MIB, age) for n, age in (("a", 30), ("b", 20), ("c", 10)))
    # the bound minus the next download's size, as held() prunes before fetching
    assert copyin_cache.prune(tmp_path, MIB, keep=wanted.name) == [old, new]
    assert wanted.exists()


def test_a_second_fetch_of_the_same_digest_waits_for_the_first_and_downloads_nothing(
    tmp_path: Path,
) -> None:
    data = b"a copy-in tar"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    # 127.0.0.1:1 answers nothing: fetch() reaching the registry would raise RegistryError.
    descriptor = {"ref": f"oci://127.0.0.1:1/x@sha256:{'b' * 64}", "digest": digest}
    got: list[Path | BaseException] = []

    def second() -> None:
        try:
            got.append(copyin.fetch({**descriptor, "size": len(data)}, tmp_path))
        except BaseException as error:
            got.append(error)

    with copyin.digest_lock(tmp_path, digest):  # the first fetch, downloading
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and got == []  # waits on the lock, no request yet
        (tmp_path / f"{digest[7:]}.tar").write_bytes(data)
    waiter.join(10)
    assert got == [tmp_path / f"{digest[7:]}.tar"]
    assert not list(tmp_path.glob(".copy-in-*"))  # the lock file went with the lock


def test_a_lock_file_left_by_a_killed_worker_is_swept_and_does_not_block(tmp_path: Path) -> None:
    digest = "sha256:" + "d" * 64
    left = tmp_path / f"{copyin_cache.PARTIAL_PREFIX}{'d' * 64}.lock"
    left.write_bytes(b"")  # what kill -9 leaves: the file, no lock held
    assert copyin_cache.prune(tmp_path, 10 * MIB) == [left]
    left.write_bytes(b"")
    with copyin.digest_lock(tmp_path, digest):
        assert copyin_cache.prune(tmp_path, 10 * MIB) == []  # held: kept
        assert left.exists()
    assert not left.exists()


def test_a_waiter_woken_on_a_released_lock_file_takes_the_lock_on_the_new_one(
    tmp_path: Path,
) -> None:
    digest = "sha256:" + "e" * 64
    path = tmp_path / f"{copyin_cache.PARTIAL_PREFIX}{'e' * 64}.lock"
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with copyin.digest_lock(tmp_path, digest):
            inside.set()
            leave.wait(10)

    with copyin.digest_lock(tmp_path, digest):
        thread = threading.Thread(target=other)
        thread.start()
        assert not inside.wait(0.3)  # excluded while held; it waits on this lock file
    # released: that file was removed, so the waiter must lock the file now at the path
    assert inside.wait(10)
    try:
        with open(path, "rb") as third, pytest.raises(BlockingIOError):
            fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        leave.set()
        thread.join(10)


def test_a_download_starts_only_once_the_cache_has_room_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(copyin_cache.CACHE_ENV, "3")
    for name, age in (("a", 30), ("b", 20), ("c", 10)):
        _tar(tmp_path, name, MIB, age)
    seen: list[int] = []

    def fetch(descriptor: dict[str, Any], into: Path) -> Path:  # the registry side: elsewhere
        seen.append(sum(p.stat().st_size for p in into.glob("*.tar")))
        return _tar(into, descriptor["digest"][7:], descriptor["size"], 0)

    monkeypatch.setattr(copyin_cache, "fetch", fetch)
    with copyin_cache.held({"digest": "sha256:" + "f" * 64, "size": 2 * MIB}, tmp_path) as tar:
        assert tar.stat().st_size == 2 * MIB
    assert seen == [MIB]  # the two least recently used went first: 1 + 2 MiB fit in 3
    assert sorted(p.name[0] for p in tmp_path.glob("*.tar")) == ["c", "f"]
