"""Host folder scanning (limits, symlinks, special files) and transfers through the agent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro.errors import GuestPathError, LimitError, UsageError
from pyro.tasks.files import export_path, guest_path, list_entries, scan_tree, upload_tree
from tests.unit.tasks.fakes import FakeAgent, FakeGuest


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "seed"
    (root / "src" / "empty").mkdir(parents=True)
    (root / "README").write_text("hello\n")
    (root / "README").chmod(0o640)
    (root / "src" / "run.sh").write_bytes(b"#!/bin/sh\necho \x00\xff\n")
    (root / "src" / "run.sh").chmod(0o755)
    os.symlink("../README", root / "src" / "readme-link")
    os.mkfifo(root / "pipe")
    return root


def test_scan_lists_files_dirs_links_and_skips_special_files(tree: Path) -> None:
    plan = scan_tree(tree)
    assert sorted(plan.dirs) == ["src", "src/empty"]
    assert sorted((rel, size, mode) for rel, size, mode in plan.files) == [
        ("README", 6, 0o640),
        ("src/run.sh", 18, 0o755),
    ]
    assert plan.links == [("src/readme-link", "../README")]
    assert plan.skipped == ["pipe"]
    assert plan.total_bytes == 24


def test_links_leaving_the_folder_are_refused(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("host only")
    os.symlink(tmp_path / "secret.txt", tree / "escape")
    with pytest.raises(UsageError, match="points outside") as info:
        scan_tree(tree)
    assert "escape" in info.value.summary and info.value.hint


def test_relative_escape_and_dangling_outside_links_are_refused(tree: Path) -> None:
    os.symlink("../../../etc/passwd", tree / "src" / "up")
    with pytest.raises(UsageError, match="points outside"):
        scan_tree(tree)


def test_size_limit_is_enforced_before_anything_is_sent(tree: Path) -> None:
    with pytest.raises(LimitError, match="more than 0 MiB") as info:
        scan_tree(tree, max_bytes=10)
    assert "PYRO_TASK_SEED_MAX_MB" in info.value.hint


def test_missing_or_file_seed_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        scan_tree(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        scan_tree(tmp_path / "file")


def test_guest_paths_are_normalized_under_the_workspace() -> None:
    assert guest_path("a/b/../c") == "/workspace/a/c"
    assert guest_path("/etc//hosts") == "/etc/hosts"
    assert guest_path("x", "/srv") == "/srv/x"
    with pytest.raises(GuestPathError):
        guest_path("")
    with pytest.raises(GuestPathError):
        guest_path("a\0b")


def test_upload_then_export_round_trips_bytes(tree: Path, tmp_path: Path) -> None:
    guest = FakeGuest()
    agent = FakeAgent(guest)
    result = upload_tree(agent, scan_tree(tree), "/workspace", str(tree))
    assert (result.files, result.directories, result.symlinks) == (2, 2, 1)
    assert result.skipped == ["pipe"]
    assert guest.files["/workspace/src/run.sh"] == b"#!/bin/sh\necho \x00\xff\n"
    assert guest.modes["/workspace/src/run.sh"] == 0o755
    assert "/workspace/src/empty" in guest.dirs
    assert guest.links["/workspace/src/readme-link"] == "../README"
    # Contents never travel in argv: only mkdir and ln ran.
    assert {argv[0] for argv, _, _ in guest.execs} == {"mkdir", "ln"}

    out = tmp_path / "out"
    exported = export_path(agent, "/workspace", out)
    assert (out / "src" / "run.sh").read_bytes() == b"#!/bin/sh\necho \x00\xff\n"
    assert os.readlink(out / "src" / "readme-link") == "../README"
    assert (out / "src" / "empty").is_dir()
    assert exported.files == 2 and exported.symlinks == 1

    single = tmp_path / "single.sh"
    export_path(agent, "/workspace/src/run.sh", single)
    assert single.read_bytes() == guest.files["/workspace/src/run.sh"]
    into = export_path(agent, "/workspace/README", out)  # an existing folder: lands inside
    assert into.dest == str(out / "README") and (out / "README").read_text() == "hello\n"


def test_list_entries_of_a_folder_and_of_a_file(tree: Path) -> None:
    agent = FakeAgent(FakeGuest())
    upload_tree(agent, scan_tree(tree), "/workspace", str(tree))
    names = {(e.name, e.kind) for e in list_entries(agent, "/workspace")}
    assert names == {("README", "file"), ("src", "directory")}
    [entry] = list_entries(agent, "/workspace/README")
    assert (entry.path, entry.size) == ("/workspace/README", 6)
    with pytest.raises(GuestPathError):
        list_entries(agent, "/nope")
