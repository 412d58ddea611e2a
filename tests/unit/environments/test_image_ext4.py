"""An image tree written as ext4 without root: what debugfs reads back from the image.

The whole path (layers applied, ``mke2fs -d``, the ``debugfs`` pass) runs as ``nobody``
when the tests run as root, so a step that needed privileges would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("mke2fs") is None or shutil.which("debugfs") is None,
    reason="needs e2fsprogs (mke2fs, debugfs)",
)

BUILD = """
import io, sys
from pathlib import Path
sys.path.insert(0, "tests")
from helpers.oci_images import Member, tar_bytes
from pyro.environments.image.ext4 import write_ext4
from pyro.environments.image.layers import Tree, apply_layer

work = Path(sys.argv[1])
tree = Tree(work / "staging")
layers = [
    [
        Member("bin/tool", b"#!/bin/sh\\necho hi\\n", mode=0o4755),
        Member("home/app", kind="dir", mode=0o750, uid=1234, gid=1234),
        Member("home/app/file", b"data", mode=0o600, uid=1234, gid=1234),
        Member("gone", b"x"),
        Member("bin/same", kind="hardlink", link="bin/tool"),
        Member("bin/sh", kind="symlink", link="tool"),
        Member("dev/null", kind="char", rdev=(1, 3), mode=0o666),
        Member("odd \\"name\\" here", b"q"),
        Member("big", b"x" * 3000, uid=70000, gid=70001, xattrs={"user.k": "v"}),
    ],
    [Member(".wh.gone")],
]
for index, members in enumerate(layers):
    apply_layer(tree, io.BytesIO(tar_bytes(members)), index, f"layer {index}", 1 << 26)
print(write_ext4(tree, work / "rootfs.ext4", work))
"""


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pyro-ext4-"))
    path.chmod(0o777)  # nobody writes here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def listing(image: Path, folder: str) -> dict[str, list[str]]:
    """``ls -l`` rows by name: inode, mode, (links), uid, gid, size, date…"""
    rows = [line.split() for line in debugfs(image, f"ls -l {folder}").splitlines()]
    return {row[-1]: row for row in rows if row}


def debugfs(image: Path, command: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_ext4_from_layers_without_root(work: Path) -> None:
    argv = [sys.executable, "-c", BUILD, str(work)]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "nobody", "--", *argv]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        cwd=os.getcwd(),
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    image = work / "rootfs.ext4"
    assert int(done.stdout.strip()) == image.stat().st_size >> 20
    if os.geteuid() == 0:
        assert image.stat().st_uid == 65534  # written by nobody
    check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rows = listing(image, "/bin")
    assert rows["tool"][1] == "104755" and rows["tool"][3:5] == ["0", "0"]
    assert rows["same"][0] == rows["tool"][0]  # one inode: the hard link survived
    assert rows["sh"][1] == "120777"
    home = listing(image, "/home")
    assert [home["app"][1], *home["app"][3:5]] == ["40750", "1234", "1234"]
    data = listing(image, "/home/app")
    assert [data["file"][1], *data["file"][3:5]] == ["100600", "1234", "1234"]
    dev = debugfs(image, "stat /dev/null")
    assert "Type: character special" in dev and "Mode:  0666" in dev
    assert "Device major/minor number: 01:03" in dev
    big = debugfs(image, "stat /big")
    assert "User: 70000   Group: 70001" in big
    assert 'user.k (1) = "v"' in debugfs(image, "ea_list /big")
    root = debugfs(image, "ls /")
    assert "gone" not in root.split() and '"name"' in root
