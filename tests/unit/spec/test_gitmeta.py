"""Which names and folders count as git metadata (pyro/spec/gitmeta.py): every spelling a host
folder may take for ``.git`` (red-team finding 1)."""

from __future__ import annotations

import pytest

from pyro.spec.gitmeta import has_git_part, is_git_name, looks_like_git_dir

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize(
    ("name", "git"),
    [
        (".git", True),
        (".GIT", True),  # case-insensitive folders (vfat, exFAT, ext4 casefold, macOS)
        (".gIt", True),
        (".git.", True),  # NTFS drops trailing dots and spaces
        (".git .", True),
        (".git::$INDEX_ALLOCATION", True),  # an NTFS stream of .git
        ("git~1", True),  # its NTFS 8.3 short name
        ("GIT~1", True),
        (".g\u200cit", True),  # HFS+ ignores U+200C
        ("\ufeff.git", True),
        ("\uff0e\uff47\uff49\uff54", True),  # fullwidth: NFKC makes it .git
        ("git", False),
        (".gitignore", False),
        (".gitmodules", False),
        (".github", False),
        ("repo.git", False),
        ("..git", False),
        (".git2", False),
        ("", False),
    ],
)
def test_git_names(name: str, git: bool) -> None:
    assert is_git_name(name) is git


@pytest.mark.parametrize(
    ("path", "git"),
    [(".git/config", True), ("a/.GIT/", True), ("a//git~1", True), ("a/b.git/c", False)],
)
def test_git_parts(path: str, git: bool) -> None:
    assert has_git_part(path) is git


@pytest.mark.parametrize(
    ("names", "git"),
    [
        (["HEAD", "objects", "refs", "config"], True),
        (["head", "OBJECTS", "Refs"], True),
        (["HEAD", "commondir"], True),  # a linked worktree's git folder
        (["HEAD", "objects"], False),
        (["objects", "refs"], False),
        (["README", "src"], False),
    ],
)
def test_git_folders(names: list[str], git: bool) -> None:
    assert looks_like_git_dir(names) is git
