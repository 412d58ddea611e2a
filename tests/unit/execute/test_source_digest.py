"""transfer.source_digest: what a plan pins of a copy-in source, and what it never reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.execute import transfer
from pyro.execute.transfer import source_digest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("a")
    (root / "src" / "sub" / "b.txt").write_text("b")
    (root / "file.txt").write_text("file")
    return root


def test_the_digest_is_stable_and_names_what_a_copy_in_copies(root: Path) -> None:
    first = source_digest(root, "src")
    assert first is not None and first.startswith("sha256:")
    assert source_digest(root, "src") == source_digest(root, "./src/") == first
    assert source_digest(root, "file.txt") not in (None, first)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "src" / "a.txt").write_text("A"),
        lambda r: (r / "src" / "a.txt").chmod(0o600),
        lambda r: (r / "src" / "a.txt").rename(r / "src" / "c.txt"),
        lambda r: (r / "src" / "sub" / "new").write_text(""),
        lambda r: (r / "src" / "sub" / "b.txt").unlink(),
    ],
    ids=["content", "mode", "rename", "added", "removed"],
)
def test_any_change_a_copy_would_carry_changes_the_digest(root: Path, change: object) -> None:
    before = source_digest(root, "src")
    change(root)  # type: ignore[operator]
    assert source_digest(root, "src") not in (None, before)


def test_what_a_copy_in_skips_does_not_count(root: Path) -> None:
    before = source_digest(root, "src")
    (root / "src" / "empty-dir").mkdir()
    (root / "src" / "dir-link").symlink_to(root / "src" / "sub")  # folders links: not followed
    assert source_digest(root, "src") == before


@pytest.mark.parametrize("source", ["missing", "../outside.txt", "/etc/hostname", "escape"])
def test_a_source_a_copy_cannot_take_has_no_digest_and_is_not_read(
    root: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root.parent / "outside.txt").write_text("secret")
    (root / "escape").mkdir()
    (root / "escape" / "link").symlink_to(root.parent / "outside.txt")
    opened: list[Path] = []
    real_digest = transfer._file_digest
    monkeypatch.setattr(
        transfer,
        "_file_digest",
        lambda path, info: opened.append(path) or real_digest(path, info),
    )
    assert source_digest(root, source) is None
    assert opened == []


def test_file_digests_are_remembered_until_the_file_changes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = source_digest(root, "src")
    reads: list[Path] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        reads.append(self)
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", counting_open)
    assert source_digest(root, "src") == first
    assert reads == []  # planning then applying in one process hashes each file once
    monkeypatch.undo()
    (root / "src" / "a.txt").write_text("changed")
    monkeypatch.setattr(Path, "open", counting_open)
    assert source_digest(root, "src") != first
    assert [path.name for path in reads] == ["a.txt"]
