"""Warm starts for ``apply``: restore a saved ready guest, or boot cold and save one.

The plan's boot step says ``restore`` when the inventory had a snapshot for this shape;
the snapshot is checked again here (hashes this time), and anything wrong with it — a
bad file, a VMM that refuses it, a guest that does not answer — falls back to a cold
boot and discards the snapshot so a later run saves a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.errors import PyroError, VMMError
from pyro.vmm import snapshot as snapshots

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.machines.registry import VMRecord, VMRegistry

#: A restored guest answers its hello in well under a second; past this, boot cold.
RESTORE_TIMEOUT_S = 20.0
SAVE_TIMEOUT_S = 30.0
#: Read-only: the saved disk must match what the guest has (reads change nothing; the
#: root filesystem is mounted noatime).
WARM_UP = "true; /usr/bin/env true"
WARM_UP_TIMEOUT_S = 30.0

#: Called with a status and a reason: ``missing`` (no valid snapshot: cold),
#: ``restore-failed`` (fell back to cold), ``saved`` / ``save-failed`` (this cold boot saved
#: one / tried to; the run goes on either way). The reason says why a ``-failed`` status
#: failed (the error's message); it is empty for the others.
Event = Callable[[str, str], None]


def snapshot_key(record: VMRecord) -> snapshots.SnapshotKey | None:
    """The key a snapshot of ``record``'s VM has, or None when its backend cannot save."""
    from pyro.guest.build import agent_digest
    from pyro.net.policy import NetworkConfig
    from pyro.net.slirp import slirp_setup
    from pyro.vmm import get_backend
    from pyro.vmm.qemu import BASE_CMDLINE, QemuBackend

    try:
        backend = get_backend(record.backend)
    except PyroError:
        return None
    if not isinstance(backend, QemuBackend):
        return None
    version = backend.probe().version
    agent = agent_digest()
    if version is None or agent is None:
        return None
    network = NetworkConfig.from_dict(record.network)
    return snapshots.SnapshotKey(
        environment_digest=record.environment_digest,
        agent_digest=agent,
        backend=record.backend,
        vmm_version=version,
        vcpus=record.vcpus,
        memory_mib=record.memory_mib,
        kernel=str(Path(record.kernel).absolute()),
        rootfs=str(Path(record.rootfs).absolute()),
        cmdline=" ".join((*BASE_CMDLINE, *slirp_setup(network).cmdline)),
        network=network.policy,
    )


def start(
    registry: VMRegistry,
    record: VMRecord,
    *,
    restore: bool,
    save: bool,
    boot_timeout: float,
    event: Event,
) -> tuple[str, AgentClient]:
    """Start ``record``'s VM: restored when ``restore`` and a valid snapshot exists, else
    cold; after a cold boot, save a snapshot when ``save`` and none exists yet.

    Returns ``("restore" | "cold", client)``.

    Raises:
        BootError: when the cold boot fails (a failed restore falls back to it).
    """
    key = snapshot_key(record) if (restore or save) else None
    store = snapshots.SnapshotStore()
    if key is not None and restore:
        found = store.find(key, verify=False)  # hashed while QEMU starts (VMRegistry.start)
        if found is None:
            event("missing", "")
        else:
            try:
                _, client = registry.start(
                    record.id, boot_timeout=min(boot_timeout, RESTORE_TIMEOUT_S), snapshot=found
                )
                return "restore", client
            except PyroError as exc:
                event("restore-failed", exc.summary)
                store.discard(key)
    # Only the boot that saves puts its RAM in a memfd the save can copy.
    saving = key is not None and save and store.find(key, verify=False) is None
    _, client = registry.start(record.id, boot_timeout=boot_timeout, shared_ram=saving)
    if saving and key is not None:
        _save(registry, record.id, client, store, key, event)
    return "cold", client


def _save(
    registry: VMRegistry,
    vm_id: str,
    client: AgentClient,
    store: snapshots.SnapshotStore,
    key: snapshots.SnapshotKey,
    event: Event,
) -> None:
    """Save the just-booted VM; any failure only costs the snapshot, never the run."""
    from pyro.vmm import get_backend
    from pyro.vmm.base import VMHandle
    from pyro.vmm.qemu import QemuBackend
    from pyro.vmm.qemu_snapshot import make_overlay_template

    record = registry.get(vm_id)
    backend = get_backend(record.backend)
    if record.handle is None or not isinstance(backend, QemuBackend):
        return
    with store.creating(key) as work:
        if work is None or store.find(key, verify=False) is not None:
            return  # someone else is saving it, or just did
        handle = VMHandle.from_dict(record.handle)
        warm_up(client)
        try:
            backend.save_state(
                handle,
                work / snapshots.STATE,
                work / snapshots.RAM,
                work / snapshots.DISK,
                timeout=SAVE_TIMEOUT_S,
            )
            make_overlay_template(
                work / snapshots.DISK,
                store.path(key) / snapshots.DISK,
                work / snapshots.OVERLAY,
            )
            store.publish(key, work)
        except (VMMError, OSError) as exc:
            event("save-failed", str(exc))
        else:
            event("saved", "")


def warm_up(client: AgentClient) -> None:
    """Run what every command needs once, so the saved guest's page cache already holds the
    shell, the dynamic loader and libc: a restored guest then skips their disk reads
    (under TCG the block and filesystem paths cost more than the reads themselves). A
    pooled guest runs it again while it waits: under TCG that also translates the code
    once, so the exec that takes the guest runs already-translated code."""
    with contextlib.suppress(PyroError):
        client.exec(["/bin/sh", "-c", WARM_UP], timeout_s=WARM_UP_TIMEOUT_S)
