"""The environment catalog: the Environment specs shipped as package data.

Specs live in ``pyro/data/environments/*.yaml`` and are read through
:mod:`importlib.resources`, never through paths relative to the source tree, so an installed
wheel finds them too. ``$PYRO_ENV_REGISTRY`` (e.g. ``127.0.0.1:5000/pyro``) gives entries
without a ``source`` one: ``oci://$PYRO_ENV_REGISTRY/<name>`` with the name's ``:`` as tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.environments.build.run import BUILDER_VERSION, sha256_bytes
from pyro.errors import EnvironmentNotFoundError, SpecError, SpecIssue, UsageError
from pyro.paths import cache_dir
from pyro.spec.ref import OciRef, parse_environment_ref

if TYPE_CHECKING:  # imported where used: catalog_names() (shell completion) needs neither
    from pyro.plan.inventory import CatalogEnvironment
    from pyro.spec.environment import EnvironmentSpec

REGISTRY_ENV = "PYRO_ENV_REGISTRY"

#: ``PYRO_NO_BUILD=1`` (what ``--no-build`` sets): never build an environment implicitly (a
#: plan that would, ``env pull`` without a registry) but fail, for CI that must pull from its
#: registry or stop. ``pyro env build`` still builds.
NO_BUILD_ENV = "PYRO_NO_BUILD"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def builds_forbidden() -> bool:
    """Whether ``$PYRO_NO_BUILD`` forbids local environment builds.

    Raises:
        UsageError: the value is neither on (1, true, yes, on) nor off (0, false, no, off).
    """
    value = os.environ.get(NO_BUILD_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise UsageError(
        f"{NO_BUILD_ENV}={value!r} is neither on nor off",
        f"set {NO_BUILD_ENV}=1 to forbid local environment builds, or unset it",
    )


KERNEL_SOURCE_DIR = Path("/usr/src")

# Host programs a build runs, with the Debian package that provides each.
BUILD_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "dpkg-query": "dpkg",
    "make": "make",
    "gcc": "gcc",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "strip": "binutils",
    "tar": "tar",
    "xz": "xz-utils",
}


@dataclass(frozen=True)
class CatalogEntry:
    """An Environment spec pyro can build, with the folder its relative paths resolve in."""

    name: str
    spec: EnvironmentSpec
    spec_dir: Path
    spec_digest: str
    source: str | None = None
    """``oci://`` reference 'env pull' would use: the spec's own, or from $PYRO_ENV_REGISTRY."""


def spec_digest(spec: EnvironmentSpec, spec_dir: Path) -> str:
    """``sha256:`` of the canonical spec JSON, the kernel fragment's bytes and the builder version.

    Raises:
        SpecError: the kernel fragment the spec names cannot be read, or a ``files`` entry
            is refused (:mod:`pyro.environments.image.files`).
    """
    if spec.spec.kernel is None:  # built from a container image: the spec and its files
        image_envelope = {
            "builder": BUILDER_VERSION,
            "spec": spec.model_dump(mode="json", by_alias=True),
        }
        if spec.spec.files:
            from pyro.environments.image.files import files_digest

            image_envelope["filesSha256"] = files_digest(spec.spec.files, spec_dir)
        text = json.dumps(image_envelope, sort_keys=True, separators=(",", ":"))
        return sha256_bytes(text.encode())
    fragment_path = spec_dir / spec.spec.kernel.fragment
    try:
        fragment = fragment_path.read_bytes()
    except OSError as exc:
        issue = SpecIssue(
            f"cannot read kernel fragment {fragment_path}: {exc.strerror or exc}",
            pointer="/spec/kernel/fragment",
        )
        raise SpecError([issue], "kernel.fragment is relative to the spec's folder") from exc
    envelope = {
        "builder": BUILDER_VERSION,
        "spec": spec.model_dump(mode="json", by_alias=True),
        "fragmentSha256": sha256_bytes(fragment),
    }
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_bytes(canonical.encode())


def registry_source(name: str) -> str | None:
    """``oci://$PYRO_ENV_REGISTRY/<name>`` (``debian:12`` → repository debian, tag 12), or None.

    Raises:
        UsageError: $PYRO_ENV_REGISTRY is set but does not make a valid oci:// reference.
    """
    registry = os.environ.get(REGISTRY_ENV, "").strip().removeprefix("oci://").rstrip("/")
    if not registry:
        return None
    ref = f"oci://{registry}/{name}"
    try:
        parsed = parse_environment_ref(ref)
    except ValueError as exc:
        raise UsageError(
            f"${REGISTRY_ENV}={registry!r} does not make a valid reference ({ref})",
            hint=f"set {REGISTRY_ENV} to HOST[:PORT]/PATH, e.g. 127.0.0.1:5000/pyro",
        ) from exc
    if not isinstance(parsed, OciRef):
        raise UsageError(f"${REGISTRY_ENV}={registry!r} is not a registry address")
    return ref


def entry_from_spec(spec: EnvironmentSpec, spec_dir: Path) -> CatalogEntry:
    """A catalog entry for a spec given by path (its folder is ``spec_dir``).

    Raises:
        SpecError: the kernel fragment cannot be read.
        UsageError: $PYRO_ENV_REGISTRY is malformed.
    """
    name = spec.metadata.name
    source = spec.spec.source.ref if spec.spec.source is not None else registry_source(name)
    return CatalogEntry(name, spec, spec_dir, spec_digest(spec, spec_dir), source)


def entry_from_path(path: Path) -> CatalogEntry:
    """Load an Environment spec file with pyro's loader and make its entry.

    Raises:
        SpecError: the file cannot be read, is invalid, or is not an Environment.
        UsageError: $PYRO_ENV_REGISTRY is malformed.
    """
    from pyro.spec.environment import EnvironmentSpec
    from pyro.spec.load import load_spec

    loaded = load_spec(path)
    if not isinstance(loaded.spec, EnvironmentSpec):
        issue = SpecIssue(
            "expected an Environment spec", pointer="/kind", file=str(path), found="Run"
        )
        raise SpecError([issue], "an environment reference must name an 'kind: Environment' file")
    return entry_from_spec(loaded.spec, loaded.base_dir)


def catalog_dir() -> Path:
    """The folder of the checked-in Environment specs (package data)."""
    # The data folder is a package of its own so this works whether or not `pyro` itself is
    # a namespace package (editable installs) — and from an installed wheel.
    return Path(str(resources.files("pyro.data.environments")))


@lru_cache(maxsize=1)
def _package_specs() -> tuple[tuple[EnvironmentSpec, Path], ...]:
    from pyro.spec.environment import EnvironmentSpec
    from pyro.spec.load import load_spec

    folder = catalog_dir()
    specs = []
    for path in sorted(folder.glob("*.yaml")):
        spec = load_spec(path).spec
        if isinstance(spec, EnvironmentSpec):
            specs.append((spec, folder))
    return tuple(specs)


def catalog() -> dict[str, CatalogEntry]:
    """The checked-in environments by ``metadata.name`` (e.g. ``debian:12``).

    Raises:
        SpecError: a packaged spec is invalid (a packaging bug).
        UsageError: $PYRO_ENV_REGISTRY is malformed.
    """
    entries = (entry_from_spec(spec, folder) for spec, folder in _package_specs())
    return {entry.name: entry for entry in sorted(entries, key=lambda e: e.name)}


def lookup(name: str) -> CatalogEntry:
    """The catalog entry called ``name``.

    Raises:
        EnvironmentNotFoundError: no such entry; the summary suggests close names.
    """
    entries = catalog()
    if name in entries:
        return entries[name]
    import difflib  # only for an unknown name

    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
    suggestion = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise EnvironmentNotFoundError(
        f"environment {name!r} is not in the catalog{suggestion}",
        hint=f"catalog environments: {', '.join(entries)}; 'pyro env list' shows installed ones",
    )


def catalog_entries() -> list[CatalogEnvironment]:
    """The catalog as the planner's inventory sees it.

    Every plan needs these, so they come from a summary cached under the cache folder
    (see :func:`_summaries`) rather than from parsing and validating the specs each time.

    Raises:
        SpecError: a packaged spec is invalid.
        UsageError: $PYRO_ENV_REGISTRY is malformed.
    """
    from pyro.plan.inventory import CatalogEnvironment
    from pyro.spec.environment import EnvironmentSpec

    buildable, _ = can_build()
    return [
        CatalogEnvironment(
            ref=summary["name"],
            name=summary["name"],
            version=summary["version"],
            spec_digest=summary["spec_digest"],
            document=EnvironmentSpec.model_validate(summary["document"]),
            folder=None,
            buildable=buildable,
            source=summary["source"] or registry_source(summary["name"]),
            default_vcpus=summary["vcpus"],
            default_memory_mib=summary["memory_mib"],
        )
        for summary in _summaries()
    ]


def catalog_names() -> list[str]:
    """The catalog's names, from the cached summary (no spec is parsed when it is current).

    Raises:
        SpecError: a packaged spec is invalid.
    """
    return [str(summary["name"]) for summary in _summaries()]


#: Bump when a summary's fields change; old summary files are then ignored.
_SUMMARY_FORMAT = 2


def _summaries() -> list[dict[str, Any]]:
    """What the inventory needs of each packaged spec, keyed by the bytes they come from.

    The key digests every file of the catalog folder (specs and kernel fragments), the
    builder version and this format, so an edited spec or fragment (editable installs) is
    never served stale; reading and hashing the folder costs well under a millisecond.
    A missing, corrupt or read-only cache only costs this process the full parse.
    """
    key = _catalog_key(catalog_dir())
    # One file per format: pyro versions sharing a cache do not overwrite each other's.
    store = cache_dir() / f"catalog-summary-{_SUMMARY_FORMAT}.json"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(store.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and cached.get("key") == key:
            return list(cached["summaries"])
    summaries = [
        {
            "name": entry.name,
            "version": entry.spec.spec.version,
            "spec_digest": entry.spec_digest,
            "source": entry.spec.spec.source.ref if entry.spec.spec.source else None,
            "vcpus": entry.spec.spec.defaults.vcpus,
            "memory_mib": entry.spec.spec.defaults.memory_mib,
            "document": entry.spec.model_dump(mode="json", by_alias=True),
        }
        for entry in catalog().values()
    ]
    with contextlib.suppress(OSError):
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "summaries": summaries}), encoding="utf-8")
        os.replace(tmp, store)
    return summaries


def _catalog_key(folder: Path) -> str:
    digest = hashlib.sha256(f"{_SUMMARY_FORMAT}\0{BUILDER_VERSION}\0".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".pyc"):
        digest.update(f"{path.relative_to(folder).as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def can_build() -> tuple[bool, str]:
    """Whether this host has what kernel and rootfs builds need, and if not, why."""
    missing = [f"{tool} ({pkg})" for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        return False, "missing build tools: " + ", ".join(missing)
    if not (KERNEL_SOURCE_DIR / "linux-source-6.1.tar.xz").is_file():
        return False, "kernel source missing: apt-get install linux-source-6.1"
    if not Path("/usr/include/libelf.h").is_file():
        return False, "libelf headers missing (objtool needs them): apt-get install libelf-dev"
    if os.geteuid() != 0:
        return False, "building a root filesystem with mmdebstrap needs root"
    return True, ""
