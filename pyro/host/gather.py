"""Gather the :class:`~pyro.plan.inventory.Inventory` the planner plans from (effectful).

This is the one place that asks the host what it has: the VMM backends and host facts
(``pyro.vmm.probe``), installed environments (``pyro.environments.cache.store``), the catalog
(``pyro.environments.catalog``), the agent initramfs digest (``pyro.guest.build``), saved
ready guests (``pyro.vmm.snapshot``) and, for pulls, registry manifest digests (``pyro.oci``,
imported only when a digest is asked for).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.environments import catalog as environment_catalog
from pyro.environments.cache.store import Cache
from pyro.errors import RegistryError, SpecError
from pyro.guest.build import agent_digest, agent_source_digest
from pyro.paths import cache_dir
from pyro.plan.inventory import (
    BackendInfo,
    CatalogEnvironment,
    InstalledEnvironment,
    Inventory,
    RemoteEnvironment,
    SavedGuest,
    UnresolvedRemote,
)
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.ref import CatalogRef, OciRef, SpecPathRef, parse_environment_ref
from pyro.vmm import snapshot
from pyro.vmm.probe import probe_backends, probe_host

if TYPE_CHECKING:
    from pyro.host.confine import Root


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
        UsageError: ``$PYRO_NO_BUILD`` is neither on nor off.
    """
    folder = base_dir if base_dir is not None else Path.cwd()
    catalog = {entry.ref: entry for entry in environment_catalog.catalog_entries()}
    for name, document in sorted((local_environments or {}).items()):
        if root is not None and document.spec.kernel is not None:
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
    forbidden = environment_catalog.builds_forbidden()
    remote, unresolved = _resolve(refs, catalog, installed) if resolve_remote else ([], [])
    backends = list(probe_backends())
    return Inventory(
        host=probe_host(),
        backends=backends,
        installed=installed,
        catalog=sorted(catalog.values(), key=lambda entry: entry.ref),
        remote=remote,
        unresolved=unresolved,
        builds_forbidden=forbidden,
        agent_digest=agent_digest(),
        agent_source_digest=agent_source_digest(),
        snapshots=_snapshots(backends),
    )


# --- environments -----------------------------------------------------------------------


def _parse(ref: str) -> CatalogRef | SpecPathRef | OciRef | None:
    try:
        return parse_environment_ref(ref)
    except ValueError:
        return None


def _installed() -> list[InstalledEnvironment]:
    found = Cache(cache_dir()).installed()
    return sorted(found, key=lambda env: (env.name, env.version, env.digest))


def _entry_from_spec(
    ref: str, document: EnvironmentSpec, spec_dir: Path, folder: str
) -> CatalogEnvironment:
    """The entry of an Environment document whose relative paths resolve in ``spec_dir``,
    which is ``folder`` relative to the Run spec's folder."""
    digest = environment_catalog.entry_from_spec(document, spec_dir).spec_digest
    source = document.spec.source.ref if document.spec.source else None
    return CatalogEnvironment(
        ref=ref,
        name=document.metadata.name,
        version=document.spec.version,
        spec_digest=digest,
        document=document,
        folder=folder,
        # An image needs no mmdebstrap or root: converting it is always possible here.
        buildable=document.spec.from_ is not None or environment_catalog.can_build()[0],
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


def _snapshots(backends: Sequence[BackendInfo]) -> list[SavedGuest]:
    """Saved ready guests whose VMM version the host still has (pyro.vmm.snapshot);
    none when warm starts are off (``PYRO_WARM=0``, ``--cold``)."""
    if not snapshot.warm_enabled():
        return []
    versions: dict[str, str | None] = {info.name: info.version for info in backends if info.usable}
    return [
        SavedGuest(
            environment_digest=key.environment_digest,
            agent_digest=key.agent_digest,
            backend=key.backend,
            vcpus=key.vcpus,
            memory_mib=key.memory_mib,
            network=key.network,
        )
        for key in snapshot.SnapshotStore().saved()
        if key.network in ("off", "egress")
        if versions.get(key.backend) == key.vmm_version
    ]


# --- registries -------------------------------------------------------------------------


def _resolve(
    refs: Sequence[str],
    catalog: Mapping[str, CatalogEnvironment],
    installed: Sequence[InstalledEnvironment],
) -> tuple[list[RemoteEnvironment], list[UnresolvedRemote]]:
    """Manifest digests of the oci:// references a plan of ``refs`` may pull, and why the
    others have none.

    Only what is not installed is asked for, so planning an installed environment never
    touches the network. An unreachable registry leaves the digest unknown (and says why).
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
        return [], []
    from pyro.oci import resolve  # the registry client is loaded only when it is asked

    found: list[RemoteEnvironment] = []
    unresolved: list[UnresolvedRemote] = []
    for ref in sorted(wanted):
        try:
            found.append(RemoteEnvironment(ref=ref, digest=resolve(ref)))
        except RegistryError as exc:
            # Offline or unknown: the plan pulls without a pinned digest, or builds instead.
            unresolved.append(UnresolvedRemote(ref=ref, reason=exc.summary))
    return found, unresolved
