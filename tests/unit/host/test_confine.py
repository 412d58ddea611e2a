"""The one confinement rule (``pyro.host.confine.Root``) and the fresh artifacts folder it makes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro.errors import OutsideRootError, UsageError
from pyro.host.confine import ARTIFACTS_FOLDER, Root

pytestmark = pytest.mark.hostile

ENVIRONMENT_SPEC = """\
apiVersion: pyro/v1
kind: Environment
metadata: {name: "mine:1"}
spec:
  version: 1.0.0
  kernel: {package: linux-source-6.1, fragment: FRAGMENT}
  rootfs: {distribution: debian, suite: bookworm, variant: minbase, packages: [], sizeMiB: 512}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``root/`` with a file, a link inside, links leaving it; ``secret`` beside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_text("inside\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("top secret\n")
    (root / "inner").symlink_to("sub")
    (root / "away").symlink_to(tmp_path / "secret")
    (root / "away-file").symlink_to(tmp_path / "secret" / "key")
    (root / "dotdot").symlink_to("../secret/key")
    return root


def test_paths_inside_resolve_with_symlinks_followed(tree: Path) -> None:
    root = Root([tree])
    assert root.confine("sub/file.txt", what="x") == tree / "sub" / "file.txt"
    assert root.confine("inner/file.txt", what="x") == tree / "sub" / "file.txt"
    assert root.confine(tree / "sub", what="x") == tree / "sub"
    assert root.confine(".", what="x") == tree
    assert root.confine("not/yet/there", what="x") == tree / "not" / "yet" / "there"
    assert root.confine("file.txt", what="x", base=tree / "sub") == tree / "sub" / "file.txt"


@pytest.mark.parametrize(
    ("value", "how"),
    [
        ("..", "is outside"),
        ("../secret/key", "is outside"),
        ("sub/../../secret/key", "is outside"),
        ("/etc/shadow", "is outside"),
        ("away/key", "through a symbolic link"),
        ("away-file", "through a symbolic link"),
        ("dotdot", "through a symbolic link"),
        ("away/../secret/key", "through a symbolic link"),  # the link is followed, then ..
    ],
)
def test_paths_leaving_the_root_are_refused(tree: Path, value: str, how: str) -> None:
    with pytest.raises(OutsideRootError) as refused:
        Root([tree], why="the test says so").confine(value, what="files[0].source")
    error = refused.value
    assert error.summary.startswith(f"files[0].source {value!r} ")
    assert how in error.summary and str(tree) in error.summary
    assert error.hint is not None and str(tree) in error.hint and "the test says so" in error.hint
    # Where a symlink points is the host's business, not the caller's.
    assert "secret" not in error.summary.replace(value, "")


def test_a_nul_byte_or_no_folder_refuses_everything(tree: Path) -> None:
    with pytest.raises(OutsideRootError, match="NUL"):
        Root([tree]).confine("sub/\x00x", what="x")
    closed = Root([], why="nobody opened one")
    with pytest.raises(OutsideRootError, match="no host folder is open") as refused:
        closed.confine("sub/file.txt", what="x", base=tree)
    assert refused.value.hint == "nobody opened one"
    with pytest.raises(OutsideRootError):
        closed.output_folder("run")


def test_several_folders_each_count(tree: Path, tmp_path: Path) -> None:
    root = Root([tree / "sub", tmp_path / "secret"])
    assert root.base == tree / "sub"
    assert root.confine("file.txt", what="x") == tree / "sub" / "file.txt"
    assert root.confine(tmp_path / "secret" / "key", what="x") == tmp_path / "secret" / "key"
    with pytest.raises(OutsideRootError):
        root.confine(tree, what="x")  # above the folders: not one of them


def test_a_root_must_be_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "missing", tmp_path / "file", "a\x00b"):
        with pytest.raises(UsageError, match="not an existing folder"):
            Root([bad])


def test_output_folders_are_new_every_time(tree: Path) -> None:
    root = Root([tree])
    first, second = root.output_folder("build"), root.output_folder("build")
    assert first != second
    for folder in (first, second):
        assert folder.parent == tree / ARTIFACTS_FOLDER and folder.name.startswith("build-")
        assert folder.is_dir() and not any(folder.iterdir())
        assert folder.stat().st_mode & 0o777 == 0o700
    assert (tree / ARTIFACTS_FOLDER / ".gitignore").read_text().splitlines()[-1] == "*"


def test_an_artifacts_folder_that_is_a_symlink_is_refused(tree: Path, tmp_path: Path) -> None:
    (tree / ARTIFACTS_FOLDER).symlink_to(tmp_path / "secret")
    with pytest.raises(UsageError, match=r"cannot use .* for artifacts"):
        Root([tree]).output_folder("run")
    assert sorted(os.listdir(tmp_path / "secret")) == ["key"]


def test_environment_paths_and_their_kernel_fragments(tree: Path, tmp_path: Path) -> None:
    environment = ENVIRONMENT_SPEC
    (tree / "good.yaml").write_text(environment.replace("FRAGMENT", "sub/file.txt"))
    (tree / "leaky.yaml").write_text(environment.replace("FRAGMENT", "away/key"))
    root = Root([tree])
    assert root.environment("debian:12") == "debian:12"
    assert root.environment("oci://127.0.0.1:5000/x:1") == "oci://127.0.0.1:5000/x:1"
    assert root.environment("good.yaml") == str(tree / "good.yaml")
    assert root.environment("missing.yaml") == str(tree / "missing.yaml")
    with pytest.raises(OutsideRootError, match=r"kernel\.fragment of leaky\.yaml"):
        root.environment("leaky.yaml")
    with pytest.raises(OutsideRootError, match="environment '/etc/shadow' is outside"):
        root.environment("/etc/shadow")
