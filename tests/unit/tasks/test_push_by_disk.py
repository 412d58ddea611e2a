"""Which way a ``sync push`` goes (tasks.transfer.by_disk), and the QMP sequence that swaps
the spare disk's medium (QemuBackend.swap_spare). Real guests prove the swap itself:
tests/e2e/test_task_pushdisk.py."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import UsageError, VMMError
from pyro.machines import pushdisk
from pyro.tasks.files import TreePlan, scan_tree, tree_entries
from pyro.tasks.transfer import by_disk
from pyro.vmm.base import VMHandle
from pyro.vmm.qemu import QemuBackend


def _plan(files: int, size: int) -> TreePlan:
    plan = TreePlan(root=Path("/nowhere"))
    plan.files = [(f"f{i}", size, 0o644) for i in range(files)]
    plan.total_bytes = files * size
    return plan


def test_a_push_goes_by_disk_above_the_threshold_on_a_task_with_a_spare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYRO_DATA_DISK_MIN_BYTES", raising=False)
    # The measured crossover (docs/performance.md): one 32 MiB file or 200 small files
    # are as fast or faster through the agent; 300 small files or the 64 MiB tree are not.
    big, small, many = _plan(1, 32 << 20), _plan(1, 31 << 20), _plan(300, 4096)
    assert by_disk("qemu-tcg", True, big)
    assert by_disk("qemu-kvm", True, many)
    assert not by_disk("qemu-tcg", True, small)
    assert not by_disk("qemu-tcg", True, _plan(200, 4096))
    assert by_disk("qemu-tcg", True, _plan(2001, (64 << 20) // 2001))
    assert not by_disk("qemu-tcg", False, big)  # a task made before the spare existed
    assert not by_disk("firecracker", True, big)
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", "0")  # the override holds for pushes too
    assert by_disk("qemu-tcg", True, _plan(1, 1))
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", str(1 << 40))
    assert not by_disk("qemu-tcg", True, big)
    monkeypatch.setenv("PYRO_DATA_DISK_MIN_BYTES", "lots")
    with pytest.raises(UsageError, match="PYRO_DATA_DISK_MIN_BYTES"):
        by_disk("qemu-tcg", True, small)


def test_the_archive_holds_exactly_the_entries_as_root(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "run").write_bytes(b"#!/bin/sh\n")
    os.chmod(tree / "sub" / "run", 0o4750)
    os.symlink("sub/run", tree / "link")
    os.mkfifo(tree / "fifo")
    plan = scan_tree(tree)
    archive = tmp_path / "push.tar"
    before = time.time()
    assert pushdisk.write_archive(tree_entries(plan), archive) == 10
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["link", "sub", "sub/run"]  # the FIFO was skipped
        assert members["sub"].isdir() and members["sub"].mode == 0o755
        assert members["sub/run"].mode == 0o4750 and members["sub/run"].size == 10
        assert members["link"].issym() and members["link"].linkname == "sub/run"
        assert {(m.uid, m.gid, m.uname) for m in members.values()} == {(0, 0, "root")}
        assert all(m.mtime >= int(before) for m in members.values())  # the copy's time


def test_a_file_changed_or_swapped_after_the_walk_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "grows").write_bytes(b"x")
    plan = scan_tree(tree)
    (tree / "grows").write_bytes(b"x" * 4096)  # past what the walk (and its cap) saw
    with pytest.raises(UsageError, match="changed while it was being copied"):
        pushdisk.write_archive(tree_entries(plan), tmp_path / "push.tar")
    os.unlink(tree / "grows")
    os.mkfifo(tree / "grows")  # a FIFO swapped in: not opened for reading (no hang)
    with pytest.raises(UsageError, match="changed while it was being copied"):
        pushdisk.write_archive(tree_entries(plan), tmp_path / "push.tar")
    os.unlink(tree / "grows")
    with pytest.raises(UsageError, match="cannot copy"):
        pushdisk.write_archive(tree_entries(plan), tmp_path / "push.tar")


def test_a_file_that_shrinks_while_it_is_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "shrinks").write_bytes(b"x" * 4096)
    plan = scan_tree(tree)
    real = tarfile.TarFile.addfile

    def shrink_first(self: tarfile.TarFile, info: tarfile.TarInfo, fileobj: Any = None) -> None:
        if fileobj is not None:  # after the open and its checks, before the read
            os.truncate(tree / "shrinks", 10)
        real(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", shrink_first)
    with pytest.raises(UsageError, match="changed while it was being copied"):
        pushdisk.write_archive(tree_entries(plan), tmp_path / "push.tar")


def test_the_placeholder_is_an_empty_private_file_made_once(tmp_path: Path) -> None:
    path = pushdisk.placeholder(tmp_path)
    assert path.stat().st_size == 0 and path.stat().st_mode & 0o777 == 0o600
    assert pushdisk.placeholder(tmp_path) == path


class _Monitor:
    """QEMU's answers to the commands swap_spare sends, by the block nodes it holds."""

    def __init__(self, nodes: set[str]) -> None:
        self.nodes = nodes
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, handle: VMHandle, command: str, **arguments: Any) -> Any:
        self.sent.append((command, arguments))
        if command == "query-named-block-nodes":
            return [{"node-name": name} for name in sorted(self.nodes)]
        if command == "blockdev-add":
            self.nodes.add(arguments["node-name"])
        if command == "blockdev-del":
            self.nodes.discard(arguments["node-name"])
        return {}


def _swap(monkeypatch: pytest.MonkeyPatch, nodes: set[str], image: Path | None) -> _Monitor:
    monitor = _Monitor(nodes)
    backend = QemuBackend("tcg")
    monkeypatch.setattr(backend, "qmp", monitor)
    handle = VMHandle("vm", "qemu-tcg", 1, Path("/vm"), "agent.sock", 0.0, 0.0)
    backend.swap_spare(handle, image)
    return monitor


def test_the_swap_points_the_raw_node_at_the_image_and_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    image = tmp_path / "push.img"
    image.write_bytes(b"\0" * 8192)
    sent = _swap(monkeypatch, {"spare", "spare-empty"}, image).sent
    assert [command for command, _ in sent] == [
        "query-named-block-nodes", "blockdev-add", "blockdev-reopen", "block_resize",
    ]  # fmt: skip
    assert sent[1][1] == {"driver": "file", "node-name": "spare-image", "filename": str(image)}
    assert sent[2][1]["options"] == [{"driver": "raw", "node-name": "spare", "file": "spare-image"}]
    assert sent[3][1] == {"node-name": "spare", "size": 8192}  # tells the guest

    back = _swap(monkeypatch, {"spare", "spare-empty", "spare-image"}, None).sent
    assert [command for command, _ in back][1:] == [
        "blockdev-reopen",
        "block_resize",
        "blockdev-del",
    ]
    assert back[1][1]["options"][0]["file"] == "spare-empty" and back[2][1]["size"] == 0


def test_an_image_left_by_an_unfinished_swap_goes_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    image = tmp_path / "push.img"
    image.write_bytes(b"\0" * 4096)
    sent = _swap(monkeypatch, {"spare", "spare-empty", "spare-image"}, image).sent
    commands = [command for command, _ in sent]
    assert commands.index("blockdev-del") < commands.index("blockdev-add")


def test_a_vm_without_a_spare_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VMMError, match="has no spare disk"):
        _swap(monkeypatch, {"root"}, None)
