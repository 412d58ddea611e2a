"""Snapshot keys and the validity rules of the snapshot store (files only, no VMM)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from pyro.vmm.snapshot import (
    DISK,
    META,
    OVERLAY,
    RAM,
    STATE,
    SnapshotKey,
    SnapshotStore,
    check,
    restorable,
    warm_enabled,
)

KEY = SnapshotKey(
    environment_digest="sha256:" + "1" * 64,
    agent_digest="sha256:" + "2" * 64,
    backend="qemu-tcg",
    vmm_version="7.2.22",
    vcpus=1,
    memory_mib=512,
    kernel="/cache/kernels/abc/vmlinux",
    rootfs="/cache/environments/debian/rootfs.ext4",
    cmdline="console=ttyS0 quiet",
    network="off",
)


def saved(store: SnapshotStore, key: SnapshotKey = KEY) -> Path:
    with store.creating(key) as work:
        assert work is not None
        (work / STATE).write_bytes(b"state" * 1000)
        with (work / RAM).open("wb") as ram:  # sparse, like a saved guest's RAM
            ram.seek(1 << 20)
            ram.write(b"page" * 1024)
            ram.truncate(4 << 20)
        (work / DISK).write_bytes(b"disk" * 100)
        (work / OVERLAY).write_bytes(b"overlay")
        return store.publish(key, work).dir


def test_every_field_of_the_key_changes_its_digest() -> None:
    changed = {
        "environment_digest": "sha256:" + "9" * 64,
        "agent_digest": "sha256:" + "8" * 64,
        "backend": "qemu-kvm",
        "vmm_version": "8.0.0",
        "vcpus": 2,
        "memory_mib": 1024,
        "kernel": "/cache/kernels/def/vmlinux",
        "rootfs": "/elsewhere/rootfs.ext4",
        "cmdline": "console=ttyS0",
        "network": "egress",
    }
    assert set(changed) == {f.name for f in dataclasses.fields(SnapshotKey)}
    digests = {dataclasses.replace(KEY, **{n: v}).digest() for n, v in changed.items()}
    assert KEY.digest() not in digests and len(digests) == len(changed)
    assert KEY.digest() == dataclasses.replace(KEY).digest()  # stable


def test_key_round_trips_and_rejects_malformed_records() -> None:
    assert SnapshotKey.from_dict(dataclasses.asdict(KEY)) == KEY
    assert SnapshotKey.from_dict({"backend": "qemu-tcg"}) is None
    assert SnapshotKey.from_dict({**dataclasses.asdict(KEY), "vcpus": "1"}) is None
    assert SnapshotKey.from_dict(["not", "a", "dict"]) is None


def test_published_snapshot_is_found_and_listed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    directory = saved(store)
    assert directory.name == KEY.digest()
    found = store.find(KEY)
    assert found is not None and found.state.read_bytes() == b"state" * 1000
    assert store.saved() == [KEY]
    # nothing but the snapshot and the lock directory is left in the store
    assert sorted(p.name for p in store.root.iterdir()) == [".locks", KEY.digest()]


@pytest.mark.parametrize(
    "damage",
    [
        "truncate-state",
        "flip-ram",
        "ram-hole-filled",
        "flip-disk",
        "delete-disk",
        "delete-overlay",
        "delete-meta",
        "garble-meta",
        "other-key",
    ],
)
def test_damaged_snapshot_is_rejected_and_discarded(tmp_path: Path, damage: str) -> None:
    store = SnapshotStore(tmp_path)
    directory = saved(store)
    if damage == "truncate-state":
        os.truncate(directory / STATE, 100)
    elif damage == "flip-ram":
        with (directory / RAM).open("r+b") as ram:  # same size, in the data
            ram.seek((1 << 20) + 5)
            ram.write(b"X")
    elif damage == "ram-hole-filled":
        with (directory / RAM).open("r+b") as ram:  # zeros written over a hole: same bytes
            ram.seek(3 << 20)
            ram.write(bytes(4096))
    elif damage == "flip-disk":
        data = bytearray((directory / DISK).read_bytes())
        data[7] ^= 0xFF  # same size: only the digest tells
        (directory / DISK).write_bytes(bytes(data))
    elif damage == "delete-disk":
        (directory / DISK).unlink()
    elif damage == "delete-overlay":
        (directory / OVERLAY).unlink()
    elif damage == "delete-meta":
        (directory / META).unlink()
    elif damage == "garble-meta":
        (directory / META).write_text("{not json")
    elif damage == "other-key":
        meta = json.loads((directory / META).read_text())
        meta["key"]["vcpus"] = 4
        (directory / META).write_text(json.dumps(meta))
    assert check(directory, KEY, verify=True) is not None
    assert store.find(KEY) is None
    assert not directory.exists()  # discarded, so the next cold boot saves a new one


def test_cheap_check_sees_truncation_but_not_a_flipped_byte(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    directory = saved(store)
    data = bytearray((directory / STATE).read_bytes())
    data[0] ^= 0xFF
    (directory / STATE).write_bytes(bytes(data))
    assert check(directory, KEY, verify=False) is None
    assert check(directory, KEY, verify=True) == "state does not match its recorded digest"
    os.truncate(directory / STATE, 10)
    assert check(directory, KEY, verify=False) == "state has 10 bytes, not 5000"


def test_a_second_creator_does_not_wait_for_the_first(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    with store.creating(KEY) as first:
        assert first is not None
        with store.creating(KEY) as second:
            assert second is None  # busy: go on without saving, never block
        other = dataclasses.replace(KEY, vcpus=2)
        with store.creating(other) as third:
            assert third is not None  # another key is independent
    with store.creating(KEY) as again:
        assert again is not None  # released


def test_unpublished_work_is_removed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    with store.creating(KEY) as work:
        assert work is not None
        (work / STATE).write_bytes(b"half")
    assert store.find(KEY) is None
    assert [p.name for p in store.root.iterdir()] == [".locks"]


def test_leftovers_of_a_killed_creator_are_cleaned_by_the_next(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.root.mkdir(parents=True)
    stale = store.root / f".tmp-{KEY.digest()}-dead"
    stale.mkdir()
    saved(store)
    assert not stale.exists()


def test_snapshot_in_a_directory_of_another_name_is_not_used(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    directory = saved(store)
    moved = store.root / ("0" * 40)
    directory.rename(moved)
    assert check(moved, None, verify=True) == "its directory does not match its key"
    assert store.saved() == []


def test_warm_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRO_WARM", raising=False)
    assert warm_enabled()
    for off in ("0", "false", "no", "off", " OFF "):
        monkeypatch.setenv("PYRO_WARM", off)
        assert not warm_enabled()
    monkeypatch.setenv("PYRO_WARM", "1")
    assert warm_enabled()


def test_only_deleted_vms_without_allowlists_or_published_ports_restore() -> None:
    assert restorable(network_policy="off", publish=False, kept=False)
    assert restorable(network_policy="egress", publish=False, kept=False)
    assert not restorable(network_policy="allowlist", publish=False, kept=False)
    assert not restorable(network_policy="egress", publish=True, kept=False)
    assert not restorable(network_policy="off", publish=True, kept=False)
    assert not restorable(network_policy="off", publish=False, kept=True)


def test_verify_raises_a_pyro_error_for_a_damaged_snapshot(tmp_path: Path) -> None:
    from pyro.errors import VMMError

    store = SnapshotStore(tmp_path)
    saved(store)
    found = store.find(KEY, verify=False)
    assert found is not None
    found.verify()  # intact: no error
    (found.dir / DISK).write_bytes(b"DISK" * 100)  # same size, other bytes
    assert store.find(KEY, verify=False) is not None  # the cheap check cannot tell
    with pytest.raises(VMMError, match="does not match its recorded digest"):
        found.verify()


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    keys = [dataclasses.replace(KEY, memory_mib=256 * (i + 1)) for i in range(4)]
    for key in keys:
        saved(store, key)
    dropped = store.prune(keep=2)
    assert sorted(dropped, key=lambda k: k.memory_mib) == keys[:2]
    assert sorted(store.saved(), key=lambda k: k.memory_mib) == keys[2:]


def test_prune_drops_entries_of_another_format(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    directory = saved(store)
    old = store.root / ("f" * 40)
    old.mkdir()
    (old / META).write_text(json.dumps({"format": 0}))
    assert store.prune(keep=16) == []
    assert not old.exists() and directory.exists()


def test_verified_files_are_not_hashed_again_until_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyro.vmm.snapshot as snapshot

    store = SnapshotStore(tmp_path)
    directory = saved(store)
    assert check(directory, KEY, verify=True) is None
    # Just written: too recent to trust a fingerprint (a write in the same clock tick
    # would leave the times unchanged), so nothing is recorded yet.
    assert not (directory / snapshot.VERIFIED).exists()

    monkeypatch.setattr(snapshot, "_SETTLED_S", -60.0)  # as if written long ago
    assert check(directory, KEY, verify=True) is None
    assert set(json.loads((directory / snapshot.VERIFIED).read_text())) == set(snapshot.FILES)

    hashed: list[Path] = []
    real_digest = snapshot.sparse_digest

    def counting_digest(path: Path) -> str:
        hashed.append(path)
        return real_digest(path)

    monkeypatch.setattr(snapshot, "sparse_digest", counting_digest)
    assert check(directory, KEY, verify=True) is None
    assert hashed == []  # nothing written since: nothing hashed

    before = os.stat(directory / RAM)
    with (directory / RAM).open("r+b") as ram:  # same size, mtime put back: ctime moves
        ram.seek((1 << 20) + 7)
        ram.write(b"!")
    os.utime(directory / RAM, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert check(directory, KEY, verify=True) == "ram does not match its recorded digest"
    assert hashed == [directory / RAM]
