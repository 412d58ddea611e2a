"""Build a guest root filesystem: an ``mmdebstrap`` tree packed by ``mkfs.ext4 -d``.

No loop mounts and no root-only kernel features beyond what mmdebstrap needs. Downloaded
.deb files are kept in ``<cache_root>/apt-archives/<suite>/`` so a rebuild downloads only
what changed in the mirror.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyro.environments.build.run import (
    ROOTFS_RECIPE_VERSION,
    Log,
    capture,
    locked,
    run_logged,
    say,
    work_dir,
)
from pyro.errors import BuildError
from pyro.spec.environment import RootfsSpec

# 2023-06-10, the Debian 12.0 release: every file time in the image is clamped to it.
SOURCE_DATE_EPOCH = 1686355200
HOSTNAME = "pyro"
LABEL = "pyro-root"
MiB = 1 << 20

# Kept out of the image by dpkg itself (and of anything installed in the guest later).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)

_GROUP_LINE = re.compile(r"^Group (\d+):")
_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    f"127.0.1.1\t{HOSTNAME}\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
_RESOLV = "# Placeholder: pyro writes the guest's resolver here when networking is on.\n"
# What the agent needs after switch_root; a tree without these cannot be used.
_REQUIRED = ("bin/sh", "dev", "proc", "sys", "tmp", "run", "etc", "workspace")


@dataclass(frozen=True)
class RootfsInfo:
    """What :func:`build_rootfs` made, for the install manifest."""

    image: Path
    image_bytes: int
    tree_bytes: int
    size_mib: int
    uuid: str
    label: str
    suite: str
    variant: str
    release_date: str
    source_date_epoch: int
    packages: dict[str, str] = field(default_factory=dict)
    mmdebstrap_seconds: float = 0.0
    mkfs_seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (camelCase keys, paths as strings)."""
        data = asdict(self)
        data["image"] = str(self.image)
        return {_camel(k): v for k, v in data.items()}


def _camel(name: str) -> str:
    if name == "size_mib":
        return "sizeMiB"  # as spelled in specs
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def rootfs_uuid(spec: RootfsSpec) -> str:
    """Deterministic filesystem UUID: the same spec and recipe give the same UUID."""
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pyro:{ROOTFS_RECIPE_VERSION}:{canonical}"))


def mmdebstrap_argv(spec: RootfsSpec, tree: Path, apt_cache: Path) -> list[str]:
    """The mmdebstrap command line for ``spec`` (pure, for tests and the docs)."""
    argv = ["mmdebstrap", f"--variant={spec.variant}", "--format=directory"]
    if spec.packages:
        argv.append("--include=" + ",".join(sorted(spec.packages)))
    argv += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
    # Keep essential .debs and the package lists until our hooks have read them.
    argv += ["--skip=essential/unlink", "--skip=cleanup/apt/lists"]
    argv += [
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
    ]
    argv += [spec.suite, str(tree)]
    return argv


def build_rootfs(
    spec: RootfsSpec, out: Path, *, cache_root: Path, log: Log | None = None
) -> RootfsInfo:
    """Build the root filesystem image ``out`` (raw ext4, ``sizeMiB`` large) for ``spec``.

    Raises:
        BuildError: mmdebstrap or mkfs.ext4 fails or is missing, the tree does not fit in
            ``sizeMiB``, or the tree lacks what the guest agent needs.
    """
    fs_uuid = rootfs_uuid(spec)
    logs = cache_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"rootfs-{fs_uuid[:8]}.log"
    log_path.write_text(f"pyro rootfs build {spec.model_dump_json(by_alias=True)}\n")
    env = {"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C"}
    with work_dir(cache_root, "rootfs-") as tmp:
        tree = tmp / "tree"
        apt_cache = cache_root / "apt-archives" / spec.suite
        apt_cache.mkdir(parents=True, exist_ok=True)
        say(log, f"rootfs: mmdebstrap {spec.variant} {spec.suite} + {len(spec.packages)} packages")
        started = time.monotonic()
        # The apt archive cache is shared: one mmdebstrap at a time syncs in and out of it.
        with locked(cache_root / "locks" / f"build-apt-{spec.suite}.lock", "rootfs build"):
            run_logged(
                mmdebstrap_argv(spec, tree, apt_cache),
                log_path=log_path,
                what="mmdebstrap",
                env={**env, "TMPDIR": str(tmp)},
            )
        debootstrap_s = time.monotonic() - started
        release_date = _release_date(tree, spec.suite)
        packages = _packages(tree)
        _finish_tree(tree)
        tree_bytes, inodes = _usage(tree)
        _check_fits(tree_bytes, inodes, spec.size_mib)
        say(log, f"rootfs: mkfs.ext4 {spec.size_mib} MiB ({tree_bytes // MiB} MiB of files)")
        started = time.monotonic()
        image = tmp / "rootfs.ext4"
        _mkfs(tree, image, spec.size_mib, fs_uuid, log_path)
        mkfs_s = time.monotonic() - started
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(image), str(out))
    return RootfsInfo(
        image=out,
        image_bytes=out.stat().st_size,
        tree_bytes=tree_bytes,
        size_mib=spec.size_mib,
        uuid=fs_uuid,
        label=LABEL,
        suite=spec.suite,
        variant=spec.variant,
        release_date=release_date,
        source_date_epoch=SOURCE_DATE_EPOCH,
        packages=packages,
        mmdebstrap_seconds=round(debootstrap_s, 1),
        mkfs_seconds=round(mkfs_s, 1),
    )


def _release_date(tree: Path, suite: str) -> str:
    """The ``Date:`` of the suite's (In)Release file mmdebstrap fetched ('' if absent).

    The suite's own file, not bookworm-updates' or the security archive's.
    """
    lists = tree / "var" / "lib" / "apt" / "lists"
    for path in sorted(lists.glob(f"*_dists_{suite}_InRelease")) + sorted(
        lists.glob(f"*_dists_{suite}_Release")
    ):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Date:"):
                return line.partition(":")[2].strip()
    return ""


def _packages(tree: Path) -> dict[str, str]:
    out = capture(
        [
            "dpkg-query",
            f"--admindir={tree / 'var' / 'lib' / 'dpkg'}",
            "-W",
            "-f",
            "${Package}\t${Version}\n",
        ],
        what="listing the tree's packages",
    )
    pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return dict(sorted((name, version) for name, version in pairs))


def _finish_tree(tree: Path) -> None:
    """Strip caches, write pyro's identity files, clamp every file time."""
    lists = tree / "var" / "lib" / "apt" / "lists"
    shutil.rmtree(lists, ignore_errors=True)
    (lists / "partial").mkdir(parents=True)
    for leftover in (tree / "var" / "cache" / "apt").glob("*.bin"):
        leftover.unlink()
    etc = tree / "etc"
    # Regular files, never symlinks to the host's: the agent rewrites them at boot.
    for name, text in (
        ("hostname", HOSTNAME + "\n"),
        ("hosts", _HOSTS),
        ("machine-id", ""),
        ("resolv.conf", _RESOLV),
    ):
        target = etc / name
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
    (tree / "workspace").mkdir(mode=0o755, exist_ok=True)
    for name in ("dev", "proc", "sys", "tmp", "run"):
        (tree / name).mkdir(exist_ok=True)
    os.chmod(tree / "tmp", 0o1777)
    missing = [name for name in _REQUIRED if not (tree / name).exists()]
    if missing:
        raise BuildError(
            f"root filesystem tree lacks {', '.join(missing)}",
            hint="the variant must provide a shell; use variant 'minbase' or larger",
        )
    _clamp_times(tree, SOURCE_DATE_EPOCH)


def _clamp_times(tree: Path, epoch: int) -> None:
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if st.st_mtime > epoch:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def _usage(tree: Path) -> tuple[int, int]:
    """Allocated bytes (hard links once) and inode count of the tree."""
    seen: set[int] = set()
    total = inodes = 0
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            inodes += 1
            total += st.st_blocks * 512
    return total, inodes


def _check_fits(tree_bytes: int, inodes: int, size_mib: int) -> None:
    # ext4 metadata (inode tables, journal, group descriptors) takes roughly 5-8% of a
    # small file system; keep that plus 256 B per inode free.
    needed_mib = (tree_bytes + inodes * 256) / MiB * 1.08 + 40
    if needed_mib > size_mib:
        raise BuildError(
            f"root filesystem needs about {int(needed_mib) + 1} MiB but sizeMiB is {size_mib}",
            hint=f"raise rootfs.sizeMiB to at least {(int(needed_mib) // 64 + 1) * 64}",
        )


def _mkfs(tree: Path, image: Path, size_mib: int, fs_uuid: str, log_path: Path) -> None:
    argv = [
        "mkfs.ext4",
        "-q",
        "-F",
        "-d",
        str(tree),
        "-L",
        LABEL,
        "-U",
        fs_uuid,
        "-m",
        "0",
        "-E",
        f"root_owner=0:0,hash_seed={fs_uuid}",
        str(image),
        f"{size_mib}M",
    ]
    # E2FSPROGS_FAKE_TIME fixes the superblock times so the same tree gives the same bytes.
    env = {"E2FSPROGS_FAKE_TIME": str(SOURCE_DATE_EPOCH), "LC_ALL": "C"}
    try:
        run_logged(argv, log_path=log_path, what="mkfs.ext4", env=env)
    except BuildError as exc:
        if "Could not allocate" in exc.summary or "No space left" in exc.summary:
            raise BuildError(
                f"root filesystem does not fit in {size_mib} MiB; log: {log_path}",
                hint="raise rootfs.sizeMiB",
            ) from exc
        raise
    _clamp_image_times(image, log_path)


def _clamp_image_times(image: Path, log_path: Path) -> None:
    """Set every used inode's atime and ctime to SOURCE_DATE_EPOCH inside the image.

    ``mkfs.ext4 -d`` copies atime and ctime from the tree; ctime cannot be set from user
    space and reading the tree moves atimes, so both are fixed afterwards with debugfs.
    """
    commands = [
        f"sif <{ino}> {field} @{SOURCE_DATE_EPOCH}"
        for ino in used_inodes(
            capture(["dumpe2fs", str(image)], what="dumpe2fs (listing used inodes)")
        )
        for field in ("atime", "ctime")
    ]
    script = image.with_name(image.name + ".debugfs")
    script.write_text("\n".join(commands) + "\n")
    try:
        run_logged(
            ["debugfs", "-w", "-f", str(script), str(image)],
            log_path=log_path,
            what="debugfs (clamping inode times)",
            # Without it debugfs stamps the superblock's last-write time with the clock.
            env={"E2FSPROGS_FAKE_TIME": str(SOURCE_DATE_EPOCH)},
        )
    finally:
        script.unlink(missing_ok=True)


def used_inodes(dumpe2fs_output: str) -> list[int]:
    """Inode numbers in use, read from ``dumpe2fs`` (the root and the non-reserved ones)."""
    per_group = 0
    used: list[int] = []
    group = -1
    for line in dumpe2fs_output.splitlines():
        if line.startswith("Inodes per group:"):
            per_group = int(line.split(":")[1])
        elif match := _GROUP_LINE.match(line):
            group = int(match.group(1))
        elif line.strip().startswith("Free inodes:") and group >= 0 and per_group:
            first, last = group * per_group + 1, (group + 1) * per_group
            free = _ranges(line.split(":", 1)[1])
            used += [ino for ino in range(first, last + 1) if ino not in free]
    return [ino for ino in used if ino == 2 or ino >= 11]


def _ranges(text: str) -> set[int]:
    numbers: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        numbers.update(range(int(low), int(high or low) + 1))
    return numbers
