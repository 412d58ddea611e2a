"""Host-path confinement of copy-in/out: nothing outside the allowed root, symlinks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.errors import GuestPathError
from pyro.execute.transfer import host_path_inside


def test_paths_inside_the_root_resolve(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    assert host_path_inside(tmp_path, "src", what="source") == (tmp_path / "src").resolve()
    assert (
        host_path_inside(tmp_path, "out/new.txt", what="target")
        == (tmp_path / "out/new.txt").resolve()
    )


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd"])
def test_paths_leaving_the_root_are_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(GuestPathError, match="outside"):
        host_path_inside(tmp_path, relative, what="source")


def test_a_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(GuestPathError, match="outside"):
        host_path_inside(root, "link/secret", what="artifact target")
