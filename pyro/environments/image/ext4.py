"""Write an image tree as a raw ext4 file without root.

``mke2fs -d`` copies the staging folder (contents, directories, symlinks, hard links, all
owned by whoever runs pyro); then one ``debugfs -w -f SCRIPT`` pass makes the image say
what the layers said: each path's mode (setuid/setgid/sticky included), owner, mtime and
extended attributes, plus the device nodes and fifos, which are created only inside the
image. Neither tool needs privileges to write a file the caller owns.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyro.environments.image.layers import Entry, Tree, regular_bytes
from pyro.errors import BuildError

BLOCK = 4096
INODE_SIZE = 256
FREE_MIB = 512
"""Space left free in the image for the guest to write into."""
_TYPE_BITS = {
    "file": 0o100000,
    "dir": 0o040000,
    "symlink": 0o120000,
    "char": 0o020000,
    "block": 0o060000,
    "fifo": 0o010000,
}
TOOL_TIMEOUT = 3600.0


def quote(path: str) -> str:
    """A debugfs argument: double quotes, a quote inside written twice."""
    return '"' + path.replace('"', '""') + '"'


def size_mib(tree: Tree) -> tuple[int, int]:
    """(image size in MiB, inode count) for the tree, with :data:`FREE_MIB` to spare."""
    inodes = len(tree.entries) + 1024
    blocks = sum(1 for e in tree.entries.values() if e.kind == "dir")
    data = regular_bytes(tree) + blocks * BLOCK + len(tree.entries) * BLOCK // 4
    metadata = inodes * 2 * INODE_SIZE + data // 12 + (16 << 20)  # journal, bitmaps, tables
    return (data + metadata) // (1 << 20) + FREE_MIB, inodes * 2


def script(tree: Tree, values: Path) -> str:
    """The debugfs commands that give every path its metadata; xattr values go in files
    under ``values`` (``ea_set -f``)."""
    lines: list[str] = []
    nodes = [(p, e) for p, e in tree.walk() if e.kind in ("char", "block", "fifo")]
    for path, entry in nodes:
        parent, _, name = path.rpartition("/")
        kind = {"char": "c", "block": "b", "fifo": "p"}[entry.kind]
        numbers = f" {entry.rdev[0]} {entry.rdev[1]}" if kind != "p" else ""
        lines += [f"cd {quote('/' + parent)}", f"mknod {quote(name)} {kind}{numbers}"]
    lines.append("cd /")
    count = 0
    for path, entry in tree.walk():
        target = quote("/" + path)
        if entry.inode:  # a hard link: its inode is set through its owner's path
            continue
        lines += _fields(target, entry)
        for name, value in sorted(entry.xattrs.items()):
            count += 1
            file = values / f"{count}"
            file.write_bytes(value)
            lines.append(f"ea_set -f {quote(str(file))} {target} {quote(name)}")
    return "\n".join(lines) + "\n"


def _fields(target: str, entry: Entry) -> list[str]:
    perms = 0o777 if entry.kind == "symlink" else entry.mode & 0o7777  # links are always 0777
    mode = _TYPE_BITS[entry.kind] | perms
    fields = [f"mode 0{mode:o}", f"uid {entry.uid}", f"gid {entry.gid}"]
    if entry.kind != "symlink" or entry.mtime:
        fields.append(f"mtime @{max(0, entry.mtime)}")
    return [f"set_inode_field {target} {field}" for field in fields]


def write_ext4(tree: Tree, image: Path, work: Path, *, label: str = "pyro-root") -> int:
    """Write ``tree`` as ext4 into ``image``; returns the image size in MiB.

    Raises:
        BuildError: mke2fs or debugfs fails (their output is in the message's log file).
    """
    size, inodes = size_mib(tree)
    log = work / "ext4.log"
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            str(BLOCK),
            "-I",
            str(INODE_SIZE),
            "-N",
            str(inodes),
            "-m",
            "0",
            "-L",
            label,
            "-E",
            "root_owner=0:0",
            "-d",
            str(tree.staging),
            str(image),
            f"{size}M",
        ],
        log,
        "mke2fs",
    )
    values = work / "xattrs"
    values.mkdir(exist_ok=True)
    commands = work / "debugfs.cmds"
    commands.write_text(script(tree, values))
    _run(["debugfs", "-w", "-f", str(commands), str(image)], log, "debugfs")
    return size


def _run(argv: list[str], log: Path, what: str) -> None:
    try:
        with open(log, "ab") as out:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                timeout=TOOL_TIMEOUT,
                check=False,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
            )
    except FileNotFoundError as exc:
        raise BuildError(
            f"{what} is not installed; it writes the image's file system",
            "install e2fsprogs (apt-get install e2fsprogs)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what} did not finish within {TOOL_TIMEOUT:g} s") from exc
    # debugfs reports a failed command on stderr but still exits 0: any error line counts.
    errors = [
        line
        for line in done.stderr.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith(("debugfs ", "mke2fs ", "Allocated inode"))
    ]
    if done.returncode != 0 or errors:
        raise BuildError(
            f"{what} failed writing the image's file system: "
            f"{(errors or ['exit ' + str(done.returncode)])[0][:300]}",
            f"see {log}",
        )
