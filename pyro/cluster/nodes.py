"""What a node offers a cluster: the Ray custom resources it should join with, and which
nodes can place a run.

A node advertises, from ``pyro doctor``'s findings, one unit per start slot of
``pyro-kvm`` (it can run hardware-virtualised guests: qemu-kvm or Firecracker) and of
``pyro-tcg`` (it can run QEMU's software emulation), one of ``pyro-backend-NAME`` per
usable backend, and ``pyro-env:NAME`` for each environment in its cache. A run asks for
one unit of the resource its backend needs, so a node runs at most as many at once as it
has start slots. ``backend: auto`` asks for ``pyro-kvm``: a cluster that would silently
fall back to emulation is slower than its user planned for; name ``qemu-tcg`` to use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KVM = "pyro-kvm"
TCG = "pyro-tcg"


def node_resources(report: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The custom resources this host should join a cluster with (``ray start
    --resources``); empty when it can run no guest."""
    from pyro.environments.cache.store import Cache
    from pyro.host.startslots import slot_count
    from pyro.paths import cache_dir

    if report is None:
        from pyro.host.doctor import doctor_report

        report = doctor_report()
    slots = max(1, slot_count())
    found: dict[str, int] = {}
    for backend in report.get("backends", []):
        if not (backend.get("usable") and backend.get("can_exec")):
            continue
        name = str(backend["name"])
        found[TCG if name == "qemu-tcg" else KVM] = slots
        found[f"pyro-backend-{name}"] = slots
    if found:
        for env in Cache(cache_dir()).installed():
            found[f"pyro-env:{env.name}"] = 1
    return dict(sorted(found.items()))


def needed_resource(backend: str) -> str:
    """The resource a run of ``backend`` (as the spec names it) asks a node for."""
    return TCG if backend == "qemu-tcg" else KVM


def placement_problems(needed: Sequence[str], nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why no alive node can run a run needing each of ``needed`` (empty: every one can
    be placed). ``nodes`` are Ray's node records (``ray.nodes()``)."""
    alive = [node for node in nodes if node.get("Alive")]
    problems = []
    for resource in sorted(set(needed)):
        if any(node.get("Resources", {}).get(resource, 0) >= 1 for node in alive):
            continue
        reasons = [
            f"{node.get('NodeManagerAddress', '?')} ({str(node.get('NodeID', ''))[:12]}): "
            f"no {resource}, has "
            + (
                ", ".join(sorted(k for k in node.get("Resources", {}) if k.startswith("pyro-")))
                or "no pyro resources"
            )
            for node in alive
        ]
        problems.append(
            f"no node offers {resource}: " + ("; ".join(reasons) or "the cluster has no alive node")
        )
    return problems
