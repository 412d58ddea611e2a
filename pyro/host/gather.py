"""Gather the :class:`~pyro.plan.inventory.Inventory` the planner plans from (effectful).

This is the one place that asks the host what it has: the VMM backends and host facts
(``pyro.vmm.probe``), installed environments (``pyro.environments.cache.store``), the catalog
(``pyro.environments.catalog``), the agent initramfs digest (``pyro.guest.build``) and, for
pulls, registry manifest digests (``pyro.oci``). Each of those modules is imported lazily
and only an ``ImportError`` is tolerated (the answer is then empty or "unknown"), so pyro
keeps planning on a checkout where one of them is missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pyro.errors import SpecError
from pyro.plan.inventory import (
    BackendInfo,
    CatalogEnvironment,
    HostInfo,
    InstalledEnvironment,
    Inventory,
    KvmKind,
    RemoteEnvironment,
    SavedGuest,
)
from pyro.spec.model import EnvironmentSpec
from pyro.spec.ref import CatalogRef, OciRef, SpecPathRef, parse_environment_ref

if TYPE_CHECKING:
    from pyro.host.confine import Root


def _optional(module: str, name: str) -> Any | None:
    """``module.name``, or None while that module (or name) does not exist.

    Only a missing module counts: an error raised while importing an existing module
    that is not an ImportError is a bug and propagates.
    """
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(found, name, None)


def gather_inventory(
    *,
    refs: Sequence[str] = (),
    resolve_remote: bool = True,
    base_dir: Path | None = None,
    local_environments: Mapping[str, EnvironmentSpec] | None = None,
    root: Root | None = None,
) -> Inventory:
    """Ask the host what the planner needs to plan runs of the environments in ``refs``.

    Args:
        refs: environment references the plans will use, as written in the specs; spec
            paths get a catalog entry, oci:// references and pull sources get resolved.
        resolve_remote: ask registries for manifest digests of what is not installed.
        base_dir: folder relative spec paths in ``refs`` are read from (default: cwd).
        local_environments: Environment documents from the Run's own file, by name; they
            replace catalog entries of the same name.
        root: for a confined caller: spec paths in ``refs``, and the kernel fragments of
            the Environment specs read, must be inside it (checked before they are read).

    Raises:
        SpecError: an Environment spec named by a path in ``refs`` is invalid.
        OutsideRootError: with ``root``, such a path is outside it.
        CacheError: the local cache cannot be read.
    """
    folder = base_dir if base_dir is not None else Path.cwd()
    catalog = {entry.ref: entry for entry in _catalog()}
    for name, document in sorted((local_environments or {}).items()):
        if root is not None:
            root.fragment(document.spec.kernel.fragment, folder, name)
        catalog[name] = _entry_from_spec(name, document, folder, ".")
    for ref in refs:
        parsed = _parse(ref)
        if isinstance(parsed, SpecPathRef) and ref not in catalog:
            if root is not None:
                root.environment(ref, base=folder)  # refuses before anything is read
            entry = _entry_from_path(ref, folder)
            if entry is not None:
                catalog[ref] = entry
    installed = _installed()
    remote = _resolve(refs, catalog, installed) if resolve_remote else []
    backends = _backends()
    return Inventory(
        host=_host(),
        backends=backends,
        installed=installed,
        catalog=sorted(catalog.values(), key=lambda entry: entry.ref),
        remote=remote,
        agent_digest=_agent_digest(),
        agent_source_digest=_agent_source_digest(),
        snapshots=_snapshots(backends),
    )


# --- host and backends ------------------------------------------------------------------


def _host() -> HostInfo:
    probe_host = _optional("pyro.vmm.probe", "probe_host")
    if probe_host is None:
        return probe_host_fallback()
    return cast(HostInfo, probe_host())


def _backends() -> list[BackendInfo]:
    probe_backends = _optional("pyro.vmm.probe", "probe_backends")
    if probe_backends is None:
        return []
    return cast(list[BackendInfo], list(probe_backends()))


def probe_host_fallback() -> HostInfo:
    """Host facts read directly from the OS (used while ``pyro.vmm.probe`` is absent)."""
    return HostInfo(
        arch=platform.machine() or "unknown",
        cpus=os.cpu_count() or 1,
        memory_mib=_memory_mib(),
        kvm=_kvm_kind(),
    )


def _memory_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _kvm_kind(
    dev: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
    pvm_module: Path = Path("/sys/module/kvm_pvm"),
) -> KvmKind:
    """``hardware`` with vmx/svm, ``pvm`` for the PVM module (or no vmx/svm), else ``none``."""
    if not dev.exists():
        return "none"
    if pvm_module.exists():
        return "pvm"
    try:
        flags = {
            flag
            for line in cpuinfo.read_text(encoding="ascii", errors="replace").splitlines()
            if line.startswith("flags")
            for flag in line.split(":", 1)[-1].split()
        }
    except OSError:
        return "none"
    # /dev/kvm without vmx/svm is a paravirtual KVM that cannot run stock guests.
    return "hardware" if flags & {"vmx", "svm"} else "pvm"


# --- environments -----------------------------------------------------------------------


def _parse(ref: str) -> CatalogRef | SpecPathRef | OciRef | None:
    try:
        return parse_environment_ref(ref)
    except ValueError:
        return None


def _installed() -> list[InstalledEnvironment]:
    cache_class = _optional("pyro.environments.cache.store", "Cache")
    if cache_class is None:
        return []
    from pyro.paths import cache_dir

    found = cast(list[InstalledEnvironment], cache_class(cache_dir()).installed())
    return sorted(found, key=lambda env: (env.name, env.version, env.digest))


def _catalog() -> list[CatalogEnvironment]:
    catalog_entries = _optional("pyro.environments.catalog", "catalog_entries")
    if catalog_entries is None:
        return []
    return cast(list[CatalogEnvironment], list(catalog_entries()))


def _can_build() -> bool:
    can_build = _optional("pyro.environments.catalog", "can_build")
    if can_build is None:
        return False
    return bool(can_build()[0])


def _entry_from_spec(
    ref: str, document: EnvironmentSpec, spec_dir: Path, folder: str
) -> CatalogEnvironment:
    """The entry of an Environment document whose relative paths resolve in ``spec_dir``,
    which is ``folder`` relative to the Run spec's folder."""
    entry_from_spec = _optional("pyro.environments.catalog", "entry_from_spec")
    if entry_from_spec is None:
        from pyro.plan.planner import document_digest

        digest = document_digest(document)
    else:
        digest = str(entry_from_spec(document, spec_dir).spec_digest)
    source = document.spec.source.ref if document.spec.source else None
    return CatalogEnvironment(
        ref=ref,
        name=document.metadata.name,
        version=document.spec.version,
        spec_digest=digest,
        document=document,
        folder=folder,
        buildable=_can_build(),
        source=source,
        default_vcpus=document.spec.defaults.vcpus,
        default_memory_mib=document.spec.defaults.memory_mib,
    )


def _entry_from_path(ref: str, folder: Path) -> CatalogEnvironment | None:
    """A catalog entry for an Environment spec file; None when there is no such file."""
    path = folder / ref
    if not path.is_file():
        return None
    from pyro.spec.load import load_spec

    loaded = load_spec(path)
    if not isinstance(loaded.spec, EnvironmentSpec):
        return None
    # Relative to the Run's folder, as the plan records it: the spec file's own folder with
    # symlinks resolved (where its loader read its relative paths from).
    relative = os.path.relpath(loaded.base_dir, folder.resolve())
    try:
        return _entry_from_spec(ref, loaded.spec, loaded.base_dir, Path(relative).as_posix())
    except SpecError as exc:
        # The builder saw only the document; name the file it came from.
        issues = [
            issue if issue.file else dataclasses.replace(issue, file=loaded.source_name)
            for issue in exc.issues
        ]
        raise SpecError(issues, exc.hint) from exc


def _agent_digest() -> str | None:
    agent_digest = _optional("pyro.guest.build", "agent_digest")
    if agent_digest is None:
        return None
    return cast(str | None, agent_digest())


def _agent_source_digest() -> str:
    from pyro.guest.build import agent_source_digest

    return agent_source_digest()


def _snapshots(backends: Sequence[BackendInfo]) -> list[SavedGuest]:
    """Saved ready guests whose VMM version the host still has (pyro.vmm.snapshot);
    none when warm starts are off (``PYRO_WARM=0``, ``--cold``)."""
    warm_enabled = _optional("pyro.vmm.snapshot", "warm_enabled")
    store = _optional("pyro.vmm.snapshot", "SnapshotStore")
    if warm_enabled is None or store is None or not warm_enabled():
        return []
    versions = {info.name: info.version for info in backends if info.usable}
    return [
        SavedGuest(
            environment_digest=key.environment_digest,
            agent_digest=key.agent_digest,
            backend=key.backend,
            vcpus=key.vcpus,
            memory_mib=key.memory_mib,
            network=key.network,
        )
        for key in store().saved()
        if key.network in ("off", "egress")
        if versions.get(key.backend) == key.vmm_version
    ]


# --- registries -------------------------------------------------------------------------


def _resolver() -> Callable[[str], str] | None:
    """The oras adapter's tag → manifest digest lookup (pyro/oci/), if present."""
    resolve = _optional("pyro.oci", "resolve")
    if resolve is not None:
        return cast(Callable[[str], str], resolve)
    client_class = _optional("pyro.oci.client", "RegistryClient")
    if client_class is None:
        return None

    def resolve_with_client(ref: str) -> str:
        parsed = parse_environment_ref(ref)
        assert isinstance(parsed, OciRef)
        return str(client_class(parsed).resolve())

    return resolve_with_client


def _resolve(
    refs: Sequence[str],
    catalog: Mapping[str, CatalogEnvironment],
    installed: Sequence[InstalledEnvironment],
) -> list[RemoteEnvironment]:
    """Manifest digests of the oci:// references a plan of ``refs`` may pull.

    Only what is not installed is asked for, so planning an installed environment never
    touches the network. An unreachable registry leaves the digest unknown.
    """
    wanted: set[str] = set()
    have = {(env.name, env.version) for env in installed}
    sources = {env.source for env in installed if env.source}
    for ref in refs:
        parsed = _parse(ref)
        if isinstance(parsed, OciRef):
            if parsed.digest is None and ref not in sources:
                wanted.add(ref)
            continue
        entry = catalog.get(ref)
        if entry is not None and entry.source and (entry.name, entry.version) not in have:
            wanted.add(entry.source)
    if not wanted:
        return []
    resolve = _resolver()
    if resolve is None:
        return []
    from pyro.errors import RegistryError

    found: list[RemoteEnvironment] = []
    for ref in sorted(wanted):
        try:
            found.append(RemoteEnvironment(ref=ref, digest=resolve(ref)))
        except RegistryError:
            continue  # offline or unknown: the plan pulls without a pinned digest
    return found
