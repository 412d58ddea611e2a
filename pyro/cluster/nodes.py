"""What a node offers a cluster: the Ray custom resources it should join with, and which
nodes can place a run.

A node advertises, from ``pyro doctor``'s findings, one unit per start slot of
``pyro-kvm`` (it can run hardware-virtualised guests: qemu-kvm or Firecracker) and of
``pyro-tcg`` (it can run QEMU's software emulation), one of ``pyro-backend-NAME`` per
usable backend, and ``pyro-env:NAME`` for each environment in its cache. A run asks for
one unit of the resource its backend needs, so a node runs at most as many at once as it
has start slots. ``backend: auto`` asks for ``pyro-kvm``: a cluster that would silently
fall back to emulation is slower than its user planned for; name ``qemu-tcg`` to use it,
or allow TCG (``--allow-tcg``), after which ``auto`` asks for whichever of the two
has more units free (a KVM node offering both still runs it with KVM).
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


def accepted_resources(backend: str, allow_tcg: bool = False) -> tuple[str, ...]:
    """The resources a run of ``backend`` may take, preferred first: ``auto`` with TCG
    allowed takes ``pyro-kvm`` or else ``pyro-tcg``; anything else just its own."""
    if backend == "auto" and allow_tcg:
        return (KVM, TCG)
    return (needed_resource(backend),)


def _offers(node: Mapping[str, Any], resource: str) -> bool:
    return bool(node.get("Alive")) and node.get("Resources", {}).get(resource, 0) >= 1


def choose_resource(
    accepted: Sequence[str],
    nodes: Sequence[Mapping[str, Any]],
    avoid: frozenset[str],
    available: Mapping[str, float] | None = None,
) -> str:
    """Which of ``accepted`` to ask for: of those an alive node outside ``avoid`` (node id
    prefixes) offers (else any alive node), the one with the most units ``available``
    now (Ray's ``available_resources()``), the earlier on a tie; else the first."""
    free = available or {}
    for pool in ([n for n in nodes if str(n.get("NodeID", ""))[:12] not in avoid], nodes):
        offered = [r for r in accepted if any(_offers(node, r) for node in pool)]
        if offered:
            return max(offered, key=lambda r: (free.get(r, 0.0), -offered.index(r)))
    return accepted[0]


def placement_problems(
    needed: Sequence[str | Sequence[str]], nodes: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Why no alive node can run a run needing each of ``needed`` (a resource, or
    resources any one of which will do; empty: every one can be placed). ``nodes`` are
    Ray's node records (``ray.nodes()``)."""
    alive = [node for node in nodes if node.get("Alive")]
    wanted = sorted({(n,) if isinstance(n, str) else tuple(n) for n in needed})
    problems = []
    for accepted in wanted:
        if any(_offers(node, resource) for node in alive for resource in accepted):
            continue
        named = " or ".join(accepted)
        reasons = [
            f"{node.get('NodeManagerAddress', '?')} ({str(node.get('NodeID', ''))[:12]}): "
            f"no {named}, has "
            + (
                ", ".join(sorted(k for k in node.get("Resources", {}) if k.startswith("pyro-")))
                or "no pyro resources"
            )
            for node in alive
        ]
        problems.append(
            f"no node offers {named}: " + ("; ".join(reasons) or "the cluster has no alive node")
        )
    return problems
