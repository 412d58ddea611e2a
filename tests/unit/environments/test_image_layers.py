"""Container image layers applied to a tree: the OCI changeset rules, and hostile tars.

Real tar bytes (made with tarfile, as image builders write them) go through
``apply_layer``; the staging folder on the host is inspected directly, so a member that
escaped it would show.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from helpers.oci_images import Member, tar_bytes

from pyro.environments.image.layers import Tree, apply_layer
from pyro.errors import RegistryError

BUDGET = 64 << 20


def apply(tree: Tree, index: int, members: list[Member], budget: int = BUDGET) -> str:
    return apply_layer(tree, io.BytesIO(tar_bytes(members)), index, f"layer {index}", budget)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "staging")


def test_files_dirs_links_and_metadata_are_recorded(tree: Tree) -> None:
    apply(
        tree,
        0,
        [
            Member("usr", kind="dir", mode=0o755),
            Member("usr/bin/tool", b"#!/bin/sh\n", mode=0o4755),
            Member("home/app/data", b"mine", mode=0o640, uid=1234, gid=4321),
            Member("usr/bin/alias", kind="hardlink", link="usr/bin/tool"),
            Member("usr/bin/sh", kind="symlink", link="/bin/dash"),
            Member("dev/null", kind="char", rdev=(1, 3), mode=0o666),
            Member("run/fifo", kind="fifo", mode=0o600),
            Member("etc/x", b"x", xattrs={"user.note": "hi", "security.capability": "cap"}),
        ],
    )
    tool = tree.entries["usr/bin/tool"]
    assert (tool.kind, tool.mode, tool.uid) == ("file", 0o4755, 0)
    data = tree.entries["home/app/data"]
    assert (data.uid, data.gid, data.mode) == (1234, 4321, 0o640)
    assert tree.entries["usr/bin/alias"].inode == "usr/bin/tool"
    staged = tree.staging
    assert os.stat(staged / "usr/bin/alias").st_ino == os.stat(staged / "usr/bin/tool").st_ino
    assert os.readlink(staged / "usr/bin/sh") == "/bin/dash"
    assert tree.entries["dev/null"].rdev == (1, 3)
    assert tree.entries["etc/x"].xattrs == {"user.note": b"hi", "security.capability": b"cap"}
    # Device nodes and fifos exist only as records: nothing is made on the host.
    assert not os.path.lexists(staged / "dev/null")
    assert not os.path.lexists(staged / "run/fifo")
    assert (staged / "home/app/data").read_bytes() == b"mine"


def test_whiteouts_and_opaque_directories(tree: Tree) -> None:
    apply(
        tree,
        0,
        [
            Member("a/gone", b"1"),
            Member("a/kept", b"2"),
            Member("opq/lower", b"3"),
            Member("opq/sub/deep", b"4"),
            Member("dir/inner", b"5"),
        ],
    )
    apply(
        tree,
        1,
        [
            Member("a/.wh.gone"),
            Member("opq/.wh..wh..opq"),
            Member("opq/upper", b"6"),
            Member("opq/sub/new", b"7"),
            Member(".wh.dir"),
        ],
    )
    assert "a/gone" not in tree.entries and not (tree.staging / "a/gone").exists()
    assert (tree.staging / "a/kept").read_bytes() == b"2"
    # The opaque directory keeps only what its own layer put there.
    assert sorted(p for p in tree.entries if p.startswith("opq/")) == [
        "opq/sub",
        "opq/sub/new",
        "opq/upper",
    ]
    assert not (tree.staging / "opq/lower").exists()
    assert not (tree.staging / "opq/sub/deep").exists()
    assert "dir" not in tree.entries and not (tree.staging / "dir").exists()


def test_a_later_layer_replaces_and_breaks_hard_links(tree: Tree) -> None:
    apply(tree, 0, [Member("f", b"old", mode=0o755), Member("g", kind="hardlink", link="f")])
    apply(tree, 1, [Member("f", b"new"), Member("d", kind="dir")])
    assert (tree.staging / "f").read_bytes() == b"new"
    assert (tree.staging / "g").read_bytes() == b"old"
    assert tree.entries["g"].inode == ""  # g now owns its inode (the old bytes)
    apply(tree, 2, [Member("d", b"now a file")])
    assert tree.entries["d"].kind == "file"


@pytest.mark.hostile
@pytest.mark.parametrize(
    "members",
    [
        [Member("../escape", b"x")],
        [Member("a/../../escape", b"x")],
        [Member("ok", b"x"), Member("link", kind="hardlink", link="../../etc/passwd")],
        [Member("link", kind="hardlink", link="/etc/passwd")],
        [Member("s", kind="symlink", link="/etc"), Member("h", kind="hardlink", link="s")],
        [Member("s", kind="symlink", link="/etc"), Member("s/passwd", b"owned")],
        [Member("s", kind="symlink", link="../../.."), Member("s/x/y", b"owned")],
        [Member("d", kind="dir"), Member("d/.wh.../../x")],
    ],
    ids=[
        "dotdot",
        "dotdot-inside",
        "hardlink-dotdot",
        "hardlink-absolute-missing",
        "hardlink-to-symlink",
        "under-symlink",
        "under-relative-symlink",
        "whiteout-dotdot",
    ],
)
def test_hostile_members_are_refused(tmp_path: Path, members: list[Member]) -> None:
    tree = Tree(tmp_path / "root" / "staging")
    with pytest.raises(RegistryError) as caught:
        apply(tree, 0, members)
    assert "refused" in caught.value.summary
    # Nothing was written outside the staging folder.
    assert sorted(os.listdir(tmp_path / "root")) == ["staging"]
    assert sorted(os.listdir(tmp_path)) == ["root"]


@pytest.mark.hostile
def test_absolute_names_stay_inside_the_root(tree: Tree, tmp_path: Path) -> None:
    apply(tree, 0, [Member("/etc/abs", b"inside"), Member("./rel", b"r")])
    assert (tree.staging / "etc/abs").read_bytes() == b"inside"
    assert "rel" in tree.entries


@pytest.mark.hostile
def test_symlinks_escaping_the_root_are_kept_as_links_never_followed(tree: Tree) -> None:
    apply(tree, 0, [Member("out", kind="symlink", link="../../../../tmp")])
    apply(tree, 1, [Member("out", b"a file replaces the link, not its target")])
    assert not os.path.islink(tree.staging / "out")
    assert (tree.staging / "out").read_bytes().startswith(b"a file")


@pytest.mark.hostile
def test_the_unpacked_size_is_bounded(tree: Tree) -> None:
    with pytest.raises(RegistryError, match="more than the pull limit"):
        apply(tree, 0, [Member("big", bytes(4 << 20))], budget=1 << 20)


def test_a_broken_tar_is_a_clear_error(tree: Tree) -> None:
    data = tar_bytes([Member("f", b"x" * 5000)])[:1500]
    with pytest.raises(RegistryError, match="not a valid tar archive"):
        apply_layer(tree, io.BytesIO(data), 0, "layer 0", BUDGET)


def test_the_diff_id_is_the_tar_sha256(tree: Tree) -> None:
    import hashlib

    data = tar_bytes([Member("f", b"x")])
    digest = apply_layer(tree, io.BytesIO(data), 0, "layer 0", BUDGET)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_names_with_line_breaks_are_refused(tree: Tree) -> None:
    with pytest.raises(RegistryError, match="line break"):
        apply(tree, 0, [Member("bad\nname", b"x")])


@pytest.mark.hostile
def test_mangled_tars_fail_only_with_registry_errors(tmp_path: Path) -> None:
    """Random byte flips in a real layer: applied, or refused with a RegistryError; never a
    traceback of another kind."""
    import random

    good = tar_bytes(
        [
            Member("d", kind="dir"),
            Member("d/f", b"x" * 700, uid=5, xattrs={"user.a": "b"}),
            Member("d/h", kind="hardlink", link="d/f"),
            Member("d/s", kind="symlink", link="f"),
            Member("d/.wh..wh..opq"),
            Member("c", kind="char", rdev=(1, 3)),
        ]
    )
    rng = random.Random(22)
    for attempt in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        tree = Tree(tmp_path / f"t{attempt}")
        with contextlib.suppress(RegistryError):
            apply_layer(tree, io.BytesIO(bytes(data)), 0, "layer 0", BUDGET)


@pytest.mark.hostile
@pytest.mark.parametrize("pax", [False, True], ids=["gnu-sparse", "pax-sparse"])
def test_a_sparse_member_cannot_expand_past_the_bytes_the_layer_holds(
    tree: Tree, pax: bool
) -> None:
    """A 2 KiB layer declaring a 64 MiB sparse file: refused before a byte is staged (a
    reader trusting the sparse map would write the holes out as zeros, past the budget)."""
    from helpers.hostile_tars import sparse_bomb

    data = sparse_bomb("bomb", 64 << 20, pax=pax)
    with pytest.raises(RegistryError, match="sparse"):
        apply_layer(tree, io.BytesIO(data), 0, "layer 0", 1 << 20)
    assert not (tree.staging / "bomb").exists()


@pytest.mark.hostile
@pytest.mark.parametrize("name", [".wh.", "etc/.wh.", "/.wh."])
def test_a_whiteout_naming_no_file_is_refused(tree: Tree, name: str) -> None:
    """``.wh.`` alone whites out nothing: never its folder, never the root."""
    apply(tree, 0, [Member("etc/passwd", b"root\n")])
    with pytest.raises(RegistryError, match="whiteout"):
        apply(tree, 1, [Member(name)])
    assert (tree.staging / "etc/passwd").read_bytes() == b"root\n"
