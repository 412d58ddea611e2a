"""The planner: a Run spec plus an :class:`Inventory` in, a :class:`Plan` out (contract §2).

Pure: everything it knows about the host arrives in the Inventory, so the same spec and
inventory always give the same plan (and digest). Problems the user can fix (unknown
environment, no usable backend, resources above the host's) do not raise: they become plan
``errors`` and ``applyable: false``, so ``pyro plan`` can show all of them at once. What the
plan will do that its user may not expect (a long local build because the registry did not
answer) becomes a plan ``warning``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pyro.errors import PlanError
from pyro.plan.inventory import (
    BackendInfo,
    CatalogEnvironment,
    InstalledEnvironment,
    Inventory,
    SourceContent,
)
from pyro.plan.model import (
    BootStep,
    BuildStep,
    CleanupStep,
    CopyInStep,
    CopyOutStep,
    ExecStep,
    InventorySummary,
    Plan,
    PlanEnvironment,
    PlanIssue,
    PlanNetwork,
    PlanResources,
    PlanStep,
    PullStep,
    seal,
)
from pyro.spec.environment import EnvironmentSpec
from pyro.spec.model import RunSpec, RunSpecBody
from pyro.spec.ref import CatalogRef, OciRef, SpecPathRef

AUTO_ORDER = ("firecracker", "qemu-kvm", "qemu-tcg")
ENV_LIST_HINT = "run 'pyro env list' to see the environments pyro knows"
DOCTOR_HINT = "run 'pyro doctor' to see which backends this host supports"
NO_BUILD = "--no-build, PYRO_NO_BUILD"


class HasSpec(Protocol):
    """What the planner needs from a loaded spec (``pyro.spec.load.LoadedSpec`` fits)."""

    @property
    def spec(self) -> RunSpec | EnvironmentSpec: ...

    @property
    def base_dir(self) -> Path:
        """The absolute folder the spec's relative host paths resolve in."""
        ...


@dataclass(frozen=True)
class _Resolved:
    """How the environment will be obtained, before it becomes plan data."""

    environment: PlanEnvironment
    default_vcpus: int
    default_memory_mib: int
    step: PullStep | BuildStep | None = None
    install_digest: str | None = None
    """The local install's manifest digest (saved guests are keyed by it), when installed."""


def plan(
    loaded: HasSpec | RunSpec | EnvironmentSpec,
    inventory: Inventory,
    *,
    environments: Mapping[str, EnvironmentSpec] | None = None,
    name: str | None = None,
) -> Plan:
    """Plan a Run spec against an inventory.

    ``environments`` are Environment documents usable by name (those from the same file).
    ``name`` names the plan instead of ``metadata.name`` (a matrix instance's name).
    The plan records ``loaded.base_dir`` as its ``spec_dir`` (none for a bare spec object).

    Raises:
        PlanError: the document is not a Run (an Environment has nothing to run).
    """
    if isinstance(loaded, RunSpec | EnvironmentSpec):
        run, spec_dir = loaded, None
    else:
        run, spec_dir = loaded.spec, str(loaded.base_dir)
    if not isinstance(run, RunSpec):
        raise PlanError(
            f"'{run.metadata.name}' is an Environment document; only a Run can be planned",
            "build it with 'pyro env build FILE', or plan a Run spec that uses it",
        )
    body = run.spec
    errors: list[PlanIssue] = []
    warnings: list[PlanIssue] = []
    resolved = _resolve_environment(body, inventory, environments or {}, errors, warnings)
    backend, backend_reason = _choose_backend(body.backend.value, inventory.backends, errors)
    vcpus = body.resources.vcpus or (resolved.default_vcpus if resolved else 1)
    memory_mib = body.resources.memory_mib or (resolved.default_memory_mib if resolved else 512)
    _check_limits(vcpus, memory_mib, inventory, errors)

    boot_mode = _boot_mode(
        body, inventory, backend, vcpus, memory_mib, resolved.install_digest if resolved else None
    )
    steps: list[PlanStep] = []
    if resolved is not None and resolved.step is not None:
        steps.append(resolved.step)
    steps.append(
        BootStep(
            id="boot",
            backend=backend,
            vcpus=vcpus,
            memory_mib=memory_mib,
            environment_digest=_content_digest(resolved),
            agent_digest=inventory.agent_source_digest,
            network=PlanNetwork(
                policy=body.network.policy.value,
                allow=list(body.network.allow),
                publish=[{"host": p.host, "guest": p.guest} for p in body.network.publish],
            ),
            mode=boot_mode,
        )
    )
    contents = {source.path: source for source in inventory.sources}
    steps += [
        CopyInStep(
            id=f"copy-in.{i}",
            source=f.source,
            target=f.target,
            digest=contents[f.source].digest if f.source in contents else None,
            by=_copy_way(inventory, backend, boot_mode, contents.get(f.source)),
        )
        for i, f in enumerate(body.files)
    ]
    steps += [
        ExecStep(
            id=f"exec.{step.name}",
            name=step.name,
            argv=step.command,
            cwd=step.cwd,
            env=dict(sorted({**body.env, **step.env}.items())),
            timeout_seconds=step.timeout_seconds,
            continue_on_error=step.continue_on_error,
        )
        for step in body.steps
    ]
    steps += [
        CopyOutStep(id=f"copy-out.{i}", source=a.source, target=a.target)
        for i, a in enumerate(body.artifacts)
    ]
    steps.append(CleanupStep(id="cleanup", policy=body.cleanup.value))

    return seal(
        metadata={"name": name or run.metadata.name},
        spec_dir=spec_dir,
        applyable=not errors,
        errors=errors,
        warnings=warnings,
        inventory=InventorySummary(
            arch=inventory.host.arch,
            kvm=inventory.host.kvm,
            backend=backend,
            backend_reason=backend_reason,
        ),
        environment=resolved.environment if resolved else None,
        resources=PlanResources(vcpus=vcpus, memory_mib=memory_mib),
        timeout_seconds=body.timeout_seconds,
        steps=steps,
    )


def _boot_mode(
    body: RunSpecBody,
    inventory: Inventory,
    backend: str | None,
    vcpus: int,
    memory_mib: int,
    install_digest: str | None,
) -> Literal["cold", "restore"]:
    """``restore`` when a saved ready guest of exactly this shape and network policy is in
    the inventory and the run may use one (network off or egress, nothing published, VM
    deleted afterwards: see pyro.vmm.snapshot.restorable); else ``cold``.

    Saved guests belong to this host's install and agent build, so they are matched by the
    install's manifest digest and the built initrd's digest (not by what the plan pins)."""
    policy = body.network.policy.value
    if (
        install_digest is None
        or policy not in ("off", "egress")
        or body.network.publish
        or body.cleanup.value != "always"
    ):
        return "cold"
    for saved in inventory.snapshots:
        if (
            saved.environment_digest == install_digest
            and saved.agent_digest == inventory.agent_digest
            and saved.backend == backend
            and (saved.vcpus, saved.memory_mib) == (vcpus, memory_mib)
            and saved.network == policy
        ):
            return "restore"
    return "cold"


def _copy_way(
    inventory: Inventory,
    backend: str | None,
    boot_mode: Literal["cold", "restore"],
    source: SourceContent | None,
) -> Literal["agent", "disk"]:
    """``disk`` when the source is large enough by the inventory's rule for this boot mode
    (on QEMU, where every run's VM has a spare disk), else ``agent``."""
    rule = inventory.disk_copy
    if rule is None or source is None or source.digest is None:
        return "agent"
    if backend is None or not backend.startswith("qemu"):
        return "agent"
    limit = rule.min_bytes if boot_mode == "cold" else rule.restored_min_bytes
    weighed = source.bytes + source.files * rule.file_weight
    return "disk" if limit is not None and weighed >= limit else "agent"


def _content_digest(resolved: _Resolved | None) -> str | None:
    """What the guest boots from, when it is installed before the run (not pulled/built)."""
    if resolved is None or resolved.environment.origin != "installed":
        return None
    return resolved.environment.digest


# --- environment ------------------------------------------------------------------------


def _resolve_environment(
    body: RunSpecBody,
    inventory: Inventory,
    environments: Mapping[str, EnvironmentSpec],
    errors: list[PlanIssue],
    warnings: list[PlanIssue],
) -> _Resolved | None:
    ref = body.environment_ref
    written = body.environment
    if isinstance(ref, OciRef):
        return _resolve_oci(written, ref, inventory)
    entry: CatalogEnvironment | None
    if isinstance(ref, CatalogRef) and ref.name in environments:
        entry = _entry_for_document(written, environments[ref.name], inventory)
    else:
        entry = _find_catalog(inventory, written)
    if entry is None and isinstance(ref, CatalogRef):
        # Installed under this name but no longer (or never) in the catalog: use it.
        installs = [env for env in inventory.installed if env.name == ref.name]
        if installs:
            return _from_installed(
                written, max(installs, key=lambda env: _version_key(env.version))
            )
    if entry is None:
        if isinstance(ref, SpecPathRef):
            message = f"environment spec '{written}' could not be read"
            hint = "check the path: it is relative to the Run spec's folder"
        else:
            message = f"environment '{written}' is not installed and not in the catalog"
            hint = ENV_LIST_HINT
        errors.append(
            PlanIssue(
                code="environment.unknown", message=message, hint=hint, pointer="/spec/environment"
            )
        )
        return None
    return _resolve_entry(written, entry, inventory, errors, warnings)


def _resolve_entry(
    written: str,
    entry: CatalogEnvironment,
    inventory: Inventory,
    errors: list[PlanIssue],
    warnings: list[PlanIssue],
) -> _Resolved:
    installed = _find_installed(inventory, entry)
    if installed is not None:
        return _from_installed(written, installed)

    def env(digest: str | None, origin: str) -> PlanEnvironment:
        return PlanEnvironment.model_validate(
            {
                "ref": written,
                "name": entry.name,
                "version": entry.version,
                "digest": digest,
                "origin": origin,
            }
        )

    remote = _remote_digest(inventory, entry.source) if entry.source else None
    failed = _unresolved(inventory, entry.source)
    # Pull when the registry answered; build when it did not but the host can build;
    # an unresolved pull is still the plan when building is impossible, or forbidden and
    # the registry was not asked (--offline).
    pull_anyway = failed is None and inventory.builds_forbidden
    if entry.source and (remote is not None or not entry.buildable or pull_anyway):
        step: PullStep | BuildStep = PullStep(id="pull", ref=entry.source, digest=remote)
        return _Resolved(env(remote, "pull"), entry.default_vcpus, entry.default_memory_mib, step)
    if entry.buildable and inventory.builds_forbidden:
        if failed is not None:
            why = f"pulling it from {entry.source} failed: {failed}"
            hint = (
                "make the registry reachable (PYRO_ENV_REGISTRY), or publish the environment "
                f"there with 'pyro env push {entry.name} REF'"
            )
        else:
            why = "it has no registry to be pulled from"
            hint = (
                "set PYRO_ENV_REGISTRY to the registry your team pushes environments to "
                "('pyro env push'), or install it first with 'pyro env pull' or 'pyro env build'"
            )
        errors.append(
            PlanIssue(
                code="environment.build-forbidden",
                message=f"environment '{written}' is not installed and would be built "
                f"locally, but builds are off ({NO_BUILD}); {why}",
                hint=hint,
                pointer="/spec/environment",
            )
        )
    elif entry.buildable and failed is not None:
        warnings.append(
            PlanIssue(
                code="environment.pull-unavailable",
                message=f"environment '{written}' could not be pulled from {entry.source} "
                f"({failed}): it will be built locally instead, which takes minutes",
                hint="check the registry (PYRO_ENV_REGISTRY) and that 'pyro env push' "
                f"published {entry.name} there; pass --no-build (or set PYRO_NO_BUILD=1) to "
                "fail instead of building",
                pointer="/spec/environment",
            )
        )
    if not entry.buildable:
        errors.append(
            PlanIssue(
                code="environment.unobtainable",
                message=f"environment '{written}' is not installed, has no pull source, "
                "and this host cannot build it",
                hint="run 'pyro doctor' to see which build tools are missing, "
                "or set PYRO_ENV_REGISTRY to pull it",
                pointer="/spec/environment",
            )
        )
    step = BuildStep(
        id="build",
        ref=written,
        spec_digest=entry.spec_digest,
        document=entry.document,
        folder=entry.folder,
    )
    return _Resolved(
        env(entry.spec_digest, "build"), entry.default_vcpus, entry.default_memory_mib, step
    )


def _resolve_oci(written: str, ref: OciRef, inventory: Inventory) -> _Resolved:
    wanted = ref.digest or _remote_digest(inventory, written)
    for installed in inventory.installed:
        if installed.source is None:
            continue
        if installed.source == written or (wanted is not None and installed.digest == wanted):
            return _from_installed(written, installed)
    name = f"{ref.registry}/{ref.repository}" + (f":{ref.tag}" if ref.tag else "")
    environment = PlanEnvironment(
        ref=written, name=name, version=None, digest=wanted, origin="pull"
    )
    return _Resolved(environment, 1, 512, PullStep(id="pull", ref=written, digest=wanted))


def _from_installed(written: str, installed: InstalledEnvironment) -> _Resolved:
    environment = PlanEnvironment(
        ref=written,
        name=installed.name,
        version=installed.version,
        digest=installed.content_digest,
        origin="installed",
    )
    return _Resolved(
        environment,
        installed.default_vcpus,
        installed.default_memory_mib,
        install_digest=installed.digest,
    )


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in version.split("."))


def _find_catalog(inventory: Inventory, written: str) -> CatalogEnvironment | None:
    return next((entry for entry in inventory.catalog if entry.ref == written), None)


def _find_installed(inventory: Inventory, entry: CatalogEnvironment) -> InstalledEnvironment | None:
    """The install of this entry's name and version, unless it was built from another spec."""
    for installed in inventory.installed:
        if installed.name != entry.name or installed.version != entry.version:
            continue
        if installed.spec_digest is None or installed.spec_digest == entry.spec_digest:
            return installed
    return None


def _entry_for_document(
    written: str, document: EnvironmentSpec, inventory: Inventory
) -> CatalogEnvironment:
    """A catalog entry for an Environment document from the Run's own file.

    The gatherer may have computed the full entry (spec digest over the build inputs too);
    without it the digest covers the document alone and building is assumed possible.
    Either way its relative paths resolve in the Run spec's folder.
    """
    name, version = document.metadata.name, document.spec.version
    for entry in inventory.catalog:
        if entry.name == name and entry.version == version and entry.ref == written:
            return entry
    source = document.spec.source.ref if document.spec.source else None
    return CatalogEnvironment(
        ref=written,
        name=name,
        version=version,
        spec_digest=document_digest(document),
        document=document,
        folder=".",
        buildable=True,
        source=source,
        default_vcpus=document.spec.defaults.vcpus,
        default_memory_mib=document.spec.defaults.memory_mib,
    )


def document_digest(document: EnvironmentSpec) -> str:
    """sha256 of an Environment document's canonical JSON (its build inputs not included)."""
    data: Any = document.model_dump(mode="json", by_alias=True, exclude_none=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _remote_digest(inventory: Inventory, ref: str | None) -> str | None:
    return next((remote.digest for remote in inventory.remote if remote.ref == ref), None)


def _unresolved(inventory: Inventory, ref: str | None) -> str | None:
    """Why the registry gave no digest for ``ref`` (None: it did, or was not asked)."""
    return next((miss.reason for miss in inventory.unresolved if miss.ref == ref), None)


# --- backend and limits -----------------------------------------------------------------


def _why_not(info: BackendInfo | None) -> str:
    if info is None:
        return "not found"
    if not info.usable:
        return info.reason or "not usable"
    return "guests boot but cannot run user space"


def _choose_backend(
    wanted: str, backends: list[BackendInfo], errors: list[PlanIssue]
) -> tuple[str | None, str]:
    by_name: dict[str, BackendInfo] = {info.name: info for info in backends}

    def usable(name: str) -> bool:
        info = by_name.get(name)
        return info is not None and info.usable and info.can_exec

    if wanted != "auto":
        if usable(wanted):
            return wanted, "asked for in the spec"
        reason = _why_not(by_name.get(wanted))
        errors.append(
            PlanIssue(
                code="backend.unusable",
                message=f"backend '{wanted}' cannot run guests on this host: {reason}",
                hint=f"{DOCTOR_HINT}, or set 'backend: auto'",
                pointer="/spec/backend",
            )
        )
        return None, f"'{wanted}' asked for in the spec: {reason}"
    skipped: list[str] = []
    for name in AUTO_ORDER:
        if usable(name):
            why = "first usable backend in auto order"
            return name, why + (f" ({'; '.join(skipped)})" if skipped else "")
        skipped.append(f"{name}: {_why_not(by_name.get(name))}")
    errors.append(
        PlanIssue(
            code="backend.none",
            message="no VMM backend can run guests on this host",
            hint=DOCTOR_HINT,
            pointer="/spec/backend",
        )
    )
    return None, "; ".join(skipped)


def _check_limits(
    vcpus: int, memory_mib: int, inventory: Inventory, errors: list[PlanIssue]
) -> None:
    host = inventory.host
    if vcpus > host.cpus:
        errors.append(
            PlanIssue(
                code="resources.vcpus",
                message=f"{vcpus} vCPUs asked for, the host has {host.cpus} CPUs",
                hint=f"set resources.vcpus to at most {host.cpus}",
                pointer="/spec/resources/vcpus",
            )
        )
    if memory_mib > host.memory_mib:
        errors.append(
            PlanIssue(
                code="resources.memory",
                message=f"{memory_mib} MiB of guest memory asked for, "
                f"the host has {host.memory_mib} MiB",
                hint=f"set resources.memoryMiB to at most {host.memory_mib}",
                pointer="/spec/resources/memoryMiB",
            )
        )
