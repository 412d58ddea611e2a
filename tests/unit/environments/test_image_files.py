"""An image-based Environment spec's ``files``: added to the image tree, hostile input refused.

Real host trees (files, folders, symlinks, a fifo) are copied into a real :class:`Tree`;
the staging folder and the rest of the host are inspected directly, so a write that
escaped would show.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro.environments.catalog import entry_from_spec
from pyro.environments.image import files as image_files
from pyro.environments.image.files import add_files, files_digest
from pyro.environments.image.layers import Entry, Tree
from pyro.errors import SpecError
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.model import FileCopy


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    made = Tree(tmp_path / "staging")
    for path in ("etc", "usr", "usr/bin"):
        made.host_path(path).mkdir()
        made.add(path, Entry("dir", 0o755, 0, 0, 0))
    made.host_path("etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    made.add("etc/passwd", Entry("file", 0o644, 0, 0, 0))
    os.symlink("usr/bin", made.host_path("bin"))
    made.add("bin", Entry("symlink", 0o777, 0, 0, 0, link="usr/bin"))
    return made


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "spec"
    (folder / "app" / "lib").mkdir(parents=True)
    (folder / "app" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (folder / "app" / "run.sh").chmod(0o4755)  # setuid on the host: dropped in the image
    (folder / "app" / "lib" / "data.txt").write_text("data")
    os.symlink("lib/data.txt", folder / "app" / "current")
    (folder / "motd").write_text("hello")
    return folder


def copies(*pairs: tuple[str, str]) -> list[FileCopy]:
    return [FileCopy(source=source, target=target) for source, target in pairs]


def test_files_and_folders_land_owned_by_root(tree: Tree, spec_dir: Path) -> None:
    wanted = copies(("app/", "/opt/app"), ("motd", "/etc/motd"), ("motd", "/etc/passwd"))
    digest = add_files(tree, wanted, spec_dir)
    assert digest == files_digest(wanted, spec_dir)
    assert tree.entries["opt"] == Entry("dir", 0o755, 0, 0, 0)
    run = tree.entries["opt/app/run.sh"]
    assert (run.kind, run.mode, run.uid, run.gid) == ("file", 0o755, 0, 0)
    assert tree.read_file("opt/app/lib/data.txt") == b"data"
    assert tree.entries["opt/app/current"].link == "lib/data.txt"
    assert os.readlink(tree.host_path("opt/app/current")) == "lib/data.txt"
    assert tree.read_file("etc/passwd") == b"hello"  # a later entry replaces an image file
    assert tree.read_file("etc/motd") == b"hello"


def test_the_digest_follows_contents_and_modes(spec_dir: Path) -> None:
    wanted = copies(("app", "/opt/app"))
    first = files_digest(wanted, spec_dir)
    (spec_dir / "app" / "lib" / "data.txt").write_text("changed")
    second = files_digest(wanted, spec_dir)
    (spec_dir / "app" / "lib" / "data.txt").chmod(0o600)
    third = files_digest(wanted, spec_dir)
    assert len({first, second, third}) == 3
    assert files_digest(copies(("app", "/opt/other")), spec_dir) != third


def test_the_spec_digest_covers_the_files(spec_dir: Path) -> None:
    spec = EnvironmentSpec.model_validate(
        {
            "apiVersion": "pyro/v1",
            "kind": "Environment",
            "metadata": {"name": "img:1"},
            "spec": {
                "version": "1.0.0",
                "from": {"image": "127.0.0.1:5000/a/b:1"},
                "files": [{"source": "motd", "target": "/etc/motd"}],
            },
        }
    )
    before = entry_from_spec(spec, spec_dir).spec_digest
    (spec_dir / "motd").write_text("changed")
    assert entry_from_spec(spec, spec_dir).spec_digest != before


def refused(tree: Tree, spec_dir: Path, wanted: list[FileCopy], match: str) -> SpecError:
    before = sorted(p.name for p in spec_dir.parent.iterdir())
    with pytest.raises(SpecError, match=match) as caught:
        add_files(tree, wanted, spec_dir)
    with pytest.raises(SpecError, match=match):
        files_digest(wanted, spec_dir)
    assert sorted(p.name for p in spec_dir.parent.iterdir()) == before
    return caught.value


def test_a_symlink_out_of_the_copied_folder_is_refused(tree: Tree, spec_dir: Path) -> None:
    os.symlink("../../motd", spec_dir / "app" / "lib" / "up")
    error = refused(tree, spec_dir, copies(("app", "/opt/app")), "outside the copied folder")
    assert error.issues[0].pointer == "/spec/files/0/source"
    (spec_dir / "app" / "lib" / "up").unlink()
    os.symlink("/etc/shadow", spec_dir / "app" / "abs")
    refused(tree, spec_dir, copies(("app", "/opt/app")), "outside the copied folder")


def test_a_source_that_is_a_symlink_is_refused(tree: Tree, spec_dir: Path) -> None:
    os.symlink("motd", spec_dir / "link")
    refused(tree, spec_dir, copies(("link", "/etc/x")), "is a symlink")


def test_a_source_outside_the_spec_folder_through_a_link_is_refused(
    tree: Tree, spec_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("private")
    os.symlink(tmp_path / "secret", spec_dir / "elsewhere")
    refused(tree, spec_dir, copies(("elsewhere/key", "/etc/key")), "outside the spec's folder")
    assert "etc/key" not in tree.entries


def test_a_source_ending_in_dotdot_through_a_link_is_refused(
    tree: Tree, spec_dir: Path, tmp_path: Path
) -> None:
    # "here/.." is "." to the spec's path check, but the kernel walks "here" (a link to the
    # spec's folder) and then "..": the folder that holds the spec's folder.
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("private")
    os.symlink(".", spec_dir / "here")
    refused(tree, spec_dir, copies(("here/..", "/opt/up")), "outside the spec's folder")
    refused(tree, spec_dir, copies(("app/../here/..", "/opt/up")), "outside the spec's folder")
    assert not any(path.startswith("opt") for path in tree.entries)


def test_special_files_are_refused(tree: Tree, spec_dir: Path) -> None:
    os.mkfifo(spec_dir / "app" / "pipe")
    refused(tree, spec_dir, copies(("app", "/opt/app")), "special file")


def test_a_missing_source_is_a_clear_error(tree: Tree, spec_dir: Path) -> None:
    error = refused(tree, spec_dir, copies(("nope", "/etc/x")), "cannot be read")
    assert "files[0].source 'nope'" in error.summary


def test_a_target_under_an_image_symlink_is_refused(tree: Tree, spec_dir: Path) -> None:
    with pytest.raises(SpecError, match="symlink to 'usr/bin'") as caught:
        add_files(tree, copies(("motd", "/bin/motd")), spec_dir)
    assert "/usr/bin/" in (caught.value.hint or "")
    assert caught.value.issues[0].pointer == "/spec/files/0/target"
    assert not (tree.staging / "usr" / "bin" / "motd").exists()


def test_a_file_does_not_replace_an_image_folder(tree: Tree, spec_dir: Path) -> None:
    with pytest.raises(SpecError, match="replace the image's folder /etc"):
        add_files(tree, copies(("motd", "/etc")), spec_dir)
    with pytest.raises(SpecError, match="which the image has as a file"):
        add_files(tree, copies(("motd", "/etc/passwd/x")), spec_dir)


def test_too_much_is_refused(tree: Tree, spec_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_files, "MAX_BYTES", 8)
    refused(tree, spec_dir, copies(("app", "/opt/app")), "more than 8 bytes")
    monkeypatch.setattr(image_files, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(image_files, "MAX_ENTRIES", 3)
    refused(tree, spec_dir, copies(("app", "/opt/app")), "more than 3 entries")


def test_names_the_ext4_writer_cannot_carry_are_refused(tree: Tree, spec_dir: Path) -> None:
    """A line break in a name would be a second command in the debugfs script."""
    (spec_dir / "app" / "x\nrm etc").write_text("injected")
    refused(tree, spec_dir, copies(("app", "/opt/app")), "line break")
    (spec_dir / "app" / "x\nrm etc").unlink()
    os.symlink("a\nb", spec_dir / "app" / "odd")
    refused(tree, spec_dir, copies(("app", "/opt/app")), "line break")
    (spec_dir / "app" / "odd").unlink()
    with pytest.raises(SpecError, match="line break") as caught:
        add_files(tree, copies(("motd", "/etc/x\nrm y")), spec_dir)
    assert caught.value.issues[0].pointer == "/spec/files/0/target"
    os.mkdir(os.fsencode(spec_dir / "app") + b"/\xff")
    refused(tree, spec_dir, copies(("app", "/opt/app")), "not UTF-8")


def test_a_deep_tree_is_refused(
    tree: Tree, spec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_files, "MAX_DEPTH", 2)
    (spec_dir / "app" / "lib" / "a" / "b").mkdir(parents=True)
    refused(tree, spec_dir, copies(("app", "/opt/app")), "nests deeper than 2")
