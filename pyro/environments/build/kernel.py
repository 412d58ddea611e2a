"""Build the guest kernel: Debian's linux-source + pyro's config fragment → stripped vmlinux.

The result is content-addressed: ``<cache_root>/kernels/<digest>/vmlinux`` where the digest
covers the fragment bytes, the linux-source package version and the recipe version. The
extracted source tree and one out-of-tree build directory are kept under
``<cache_root>/src/`` so a rebuild after a fragment change only recompiles what changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pyro.environments.build.run import (
    KERNEL_RECIPE_VERSION,
    Log,
    capture,
    locked,
    publish,
    run_logged,
    say,
    sha256_bytes,
    sha256_file,
    work_dir,
)
from pyro.errors import BuildError
from pyro.spec.environment import KernelSpec

# Fixed build identity, so the same inputs give the same `uname -v` and the same bytes.
BUILD_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 1970",
    "KBUILD_BUILD_USER": "pyro",
    "KBUILD_BUILD_HOST": "pyro",
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
}

_LINE_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_LINE_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class KernelSource:
    """A Debian linux-source package as installed on the host."""

    package: str
    version: str
    tarball: Path


def source_for(package: str) -> KernelSource:
    """The installed linux-source package: its exact version and source tarball.

    Raises:
        BuildError: the package is not installed or its tarball is missing.
    """
    out = capture(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Version}", package],
        what=f"looking up {package}",
    )
    status, _, version = out.partition("\t")
    tarball = Path("/usr/src") / f"{package}.tar.xz"
    if not status.startswith("ii") or not version or not tarball.is_file():
        raise BuildError(
            f"kernel source package {package} is not installed",
            hint=f"install it: apt-get install {package}",
        )
    return KernelSource(package=package, version=version.strip(), tarball=tarball)


def kernel_digest(fragment: bytes, source: KernelSource) -> str:
    """Content address of a kernel build: fragment bytes + source version + recipe."""
    header = f"{KERNEL_RECIPE_VERSION}\n{source.package}={source.version}\n".encode()
    return sha256_bytes(header + fragment)


def parse_config(text: str) -> dict[str, str]:
    """Kconfig lines → {symbol: value}; ``# CONFIG_X is not set`` becomes ``"n"``."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if match := _LINE_SET.match(line):
            values[match.group(1)] = match.group(2)
        elif match := _LINE_UNSET.match(line):
            values[match.group(1)] = "n"
    return values


def dropped_options(fragment: str, config: str) -> list[str]:
    """Fragment settings the final ``.config`` does not honour, as ``CONFIG_X=want (got)``.

    Kconfig silently drops a symbol whose dependencies are unmet (EXT4_FS without BLOCK),
    so every fragment line is checked against the resolved configuration.
    """
    want = parse_config(fragment)
    have = parse_config(config)
    problems = []
    for name, value in want.items():
        got = have.get(name, "n")
        if got != value:
            shown = "not set" if name not in have or got == "n" else got
            problems.append(f"{name}={value} ({shown})")
    return problems


def check_fragment(fragment: str, config: str, fragment_path: Path) -> None:
    """Fail if the resolved ``config`` dropped or changed any setting of ``fragment``.

    Raises:
        BuildError: naming every dropped option.
    """
    dropped = dropped_options(fragment, config)
    if dropped:
        raise BuildError(
            f"kernel config fragment {fragment_path}: Kconfig dropped "
            f"{len(dropped)} option(s): {', '.join(dropped)}",
            hint="enable the options they depend on in the fragment "
            "('make menuconfig' shows each option's dependencies)",
        )


def configure(src: Path, obj: Path, fragment_path: Path, log_path: Path) -> str:
    """``make tinyconfig``, merge the fragment, ``make olddefconfig`` in ``obj``; the .config.

    Raises:
        BuildError: a step fails (log tail and path in the summary).
    """
    make = ["make", "-C", str(src), f"O={obj}"]
    run_logged([*make, "tinyconfig"], log_path=log_path, what="make tinyconfig", env=BUILD_ENV)
    merge = str(src / "scripts" / "kconfig" / "merge_config.sh")
    run_logged(
        [merge, "-m", "-O", str(obj), str(obj / ".config"), str(fragment_path)],
        log_path=log_path,
        what="merge_config.sh",
        cwd=src,
        env=BUILD_ENV,
    )
    run_logged([*make, "olddefconfig"], log_path=log_path, what="make olddefconfig", env=BUILD_ENV)
    return (obj / ".config").read_text()


@dataclass(frozen=True)
class KernelBuild:
    """A built kernel in the cache."""

    digest: str
    vmlinux: Path
    release: str
    metadata: dict[str, object]


def build_kernel(
    spec: KernelSpec, spec_dir: Path, *, cache_root: Path, log: Log | None = None
) -> Path:
    """Build (or find in the cache) the kernel a spec asks for; return its vmlinux path.

    Raises:
        BuildError: the fragment is unreadable, a fragment option is dropped by Kconfig,
            a build tool is missing or the build fails (with the log tail and path).
    """
    return build_kernel_info(spec, spec_dir, cache_root=cache_root, log=log).vmlinux


def build_kernel_info(
    spec: KernelSpec, spec_dir: Path, *, cache_root: Path, log: Log | None = None
) -> KernelBuild:
    """Like :func:`build_kernel`, returning the digest and ``build.json`` too.

    Raises:
        BuildError: see :func:`build_kernel`.
    """
    fragment_path = spec_dir / spec.fragment
    try:
        fragment = fragment_path.read_bytes()
    except OSError as exc:
        raise BuildError(
            f"cannot read kernel fragment {fragment_path}: {exc.strerror or exc}",
            hint="kernel.fragment is relative to the Environment spec's folder",
        ) from exc
    source = source_for(spec.package)
    digest = kernel_digest(fragment, source)
    final = cache_root / "kernels" / digest.removeprefix("sha256:")
    if (hit := _cached(final, digest)) is not None:
        say(log, f"kernel {digest[:19]} cached")
        return hit
    with locked(cache_root / "locks" / f"build-kernel-{source.version}.lock", "kernel build"):
        if (hit := _cached(final, digest)) is not None:
            return hit
        _build(fragment, fragment_path, source, digest, final, cache_root, log)
    built = _cached(final, digest)
    if built is None:
        raise BuildError(f"kernel build {digest} finished but {final} is incomplete")
    return built


def _cached(final: Path, digest: str) -> KernelBuild | None:
    vmlinux, meta_path = final / "vmlinux", final / "build.json"
    if not (vmlinux.is_file() and meta_path.is_file()):
        return None
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return KernelBuild(digest, vmlinux, str(metadata.get("release", "")), metadata)


def _build(
    fragment: bytes,
    fragment_path: Path,
    source: KernelSource,
    digest: str,
    final: Path,
    cache_root: Path,
    log: Log | None,
) -> None:
    logs = cache_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"kernel-{digest.removeprefix('sha256:')[:16]}.log"
    log_path.write_text(f"pyro kernel build {digest}\n")
    started = time.monotonic()
    src = source_tree(source, cache_root, log_path, log)
    # One shared out-of-tree build dir per source version: a changed fragment recompiles
    # only what the new .config touches.
    obj = cache_root / "src" / f"linux-{source.version}" / "build"
    obj.mkdir(parents=True, exist_ok=True)
    say(log, "kernel: make tinyconfig + fragment + olddefconfig")
    config = configure(src, obj, fragment_path, log_path)
    check_fragment(fragment.decode(errors="replace"), config, fragment_path)
    make = ["make", "-C", str(src), f"O={obj}"]
    jobs = str(os.cpu_count() or 1)
    say(log, f"kernel: make -j{jobs} vmlinux (log: {log_path})")
    run_logged(
        [*make, f"-j{jobs}", "vmlinux"], log_path=log_path, what="make vmlinux", env=BUILD_ENV
    )
    release = (obj / "include" / "config" / "kernel.release").read_text().strip()
    with work_dir(cache_root, "kernel-") as tmp:
        staged = tmp / "out"
        staged.mkdir()
        run_logged(
            ["strip", "--strip-all", "-o", str(staged / "vmlinux"), str(obj / "vmlinux")],
            log_path=log_path,
            what="strip vmlinux",
        )
        (staged / ".config").write_text(config)
        metadata = {
            "digest": digest,
            "inputs": {
                "package": source.package,
                "packageVersion": source.version,
                "fragmentSha256": sha256_bytes(fragment),
                "recipe": KERNEL_RECIPE_VERSION,
            },
            "release": release,
            "configSha256": sha256_bytes(config.encode()),
            "vmlinuxSha256": sha256_file(staged / "vmlinux"),
            "vmlinuxBytes": (staged / "vmlinux").stat().st_size,
            "buildSeconds": round(time.monotonic() - started, 1),
        }
        shutil.copyfile(log_path, staged / "build.log")
        # build.json is written last: its presence marks a complete result.
        (staged / "build.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        publish(staged, final)
    say(log, f"kernel {release} built in {metadata['buildSeconds']} s")


def source_tree(source: KernelSource, cache_root: Path, log_path: Path, log: Log | None) -> Path:
    """The extracted source tree of ``source``, extracting it once (atomically)."""
    tree = cache_root / "src" / f"linux-{source.version}" / "source"
    if (tree / "Makefile").is_file():
        return tree
    say(log, f"kernel: extracting {source.tarball}")
    with work_dir(cache_root, "kernel-src-") as tmp:
        run_logged(
            ["tar", "-xf", str(source.tarball), "-C", str(tmp)],
            log_path=log_path,
            what=f"extracting {source.tarball}",
        )
        extracted = [p for p in tmp.iterdir() if (p / "Makefile").is_file()]
        if len(extracted) != 1:
            raise BuildError(f"{source.tarball} does not hold one kernel source tree")
        publish(extracted[0], tree)
    return tree
