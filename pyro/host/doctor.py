"""Everything ``pyro doctor`` shows: host facts, backends, host tools, disk, and checks.

Each check is PASS (fine), WARN (some feature is unavailable) or FAIL (pyro cannot run a
guest, or cannot store anything). The report is plain JSON-ready data.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

from pyro.paths import cache_dir, state_dir
from pyro.vmm.probe import (
    DEV_KVM,
    PVM_REASON,
    find_firecracker,
    kvm_accessible,
    probe_backends,
    probe_host,
)

Status = Literal["PASS", "WARN", "FAIL"]
DEV_TUN = Path("/dev/net/tun")
MIN_FREE_MIB = 512
LOW_FREE_MIB = 4096

KVM_EXPLANATION = {
    "hardware": "hardware virtualization (vmx/svm): Firecracker and QEMU with KVM run guests",
    "pvm": PVM_REASON + "; pyro uses QEMU with TCG (software emulation) instead",
    "none": "no /dev/kvm: pyro uses QEMU with TCG (software emulation)",
}


def doctor_report() -> dict[str, Any]:
    """Collect the doctor report; never raises for a missing tool (that is a check result)."""
    from pyro.__about__ import __version__

    host = probe_host()
    backends = probe_backends(host.kvm)
    runnable = [b.name for b in backends if b.usable and b.can_exec]
    tools = {name: _which(name) for name in _TOOLS}
    firecracker = find_firecracker()
    tools["firecracker"] = str(firecracker) if firecracker else None
    dirs = {"cache": _dir_info(cache_dir()), "state": _dir_info(state_dir())}

    checks: list[dict[str, str]] = []

    def check(name: str, status: Status, detail: str) -> None:
        checks.append({"name": name, "status": status, "detail": detail})

    check(
        "kvm",
        "PASS" if host.kvm == "hardware" else "WARN",
        KVM_EXPLANATION[host.kvm],
    )
    for backend in backends:
        status: Status = "PASS" if backend.usable and backend.can_exec else "WARN"
        detail = backend.reason or f"usable (version {backend.version})"
        check(f"backend {backend.name}", status, detail)
    check(
        "runnable backend",
        "PASS" if runnable else "FAIL",
        f"will use {runnable[0]}" if runnable else "no backend can run a guest here",
    )
    qemu_needed = any(name.startswith("qemu") for name in runnable)
    check(
        "qemu-img",
        "PASS" if tools["qemu-img"] else ("FAIL" if qemu_needed else "WARN"),
        tools["qemu-img"] or "missing: QEMU VMs need it for disk overlays (apt install qemu-utils)",
    )
    check(
        "mmdebstrap",
        "PASS" if tools["mmdebstrap"] else "WARN",
        tools["mmdebstrap"] or "missing: building environments needs it (pulling does not)",
    )
    compiler = tools["musl-gcc"] or tools["cc"]
    check(
        "C compiler",
        "PASS" if compiler else "WARN",
        compiler or "missing: building the guest agent needs musl-gcc or cc (musl-tools)",
    )
    check(
        "mkfs.ext4",
        "PASS" if tools["mkfs.ext4"] else "WARN",
        tools["mkfs.ext4"]
        or "missing: building root filesystems and large task seeds as disks need e2fsprogs",
    )
    check(
        "/dev/net/tun",
        "PASS" if DEV_TUN.exists() else "WARN",
        "present" if DEV_TUN.exists() else "missing: guest networking will not work",
    )
    firewall = tools["nft"] or tools["iptables"]
    check(
        "firewall tool",
        "PASS" if firewall else "WARN",
        firewall or "missing nft and iptables: guest networking will not work",
    )
    from pyro.net.support import network_checks

    for name, net_status, detail in network_checks():
        check(name, net_status, detail)
    for label, info in dirs.items():
        free = info["free_mib"]
        dir_status: Status = "PASS"
        if not info["writable"] or free < MIN_FREE_MIB:
            dir_status = "FAIL"
        elif free < LOW_FREE_MIB:
            dir_status = "WARN"
        check(
            f"{label} dir",
            dir_status,
            f"{info['path']}: {free} MiB free" + ("" if info["writable"] else ", not writable"),
        )

    check("start slots", *_start_slots())

    return {
        "ok": all(c["status"] != "FAIL" for c in checks),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python": sys.version.split()[0],
            "pyro": __version__,
        },
        "host": host.model_dump(),
        "kvm": {
            "kind": host.kvm,
            "device": DEV_KVM.exists(),
            "accessible": kvm_accessible(),
            "explanation": KVM_EXPLANATION[host.kvm],
        },
        "backends": [b.model_dump() for b in backends],
        "selected_backend": runnable[0] if runnable else None,
        "tools": tools,
        "dirs": dirs,
        "checks": checks,
    }


def _start_slots() -> tuple[Status, str]:
    """How many runs may be starting at once (pyro.host.startslots), or why that is unset."""
    from pyro.errors import UsageError
    from pyro.host.startslots import SLOTS_ENV, slot_count

    try:
        count = slot_count()
    except UsageError as exc:
        return "FAIL", f"{exc.summary}: {exc.hint}"
    if count == 0:
        return "PASS", f"off ({SLOTS_ENV}=0): runs start however many at once"
    source = f"{SLOTS_ENV}" if os.environ.get(SLOTS_ENV, "").strip() else "one per CPU"
    return "PASS", f"{count} run(s) may start at once ({source})"


_TOOLS: tuple[str, ...] = ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4")
_TOOLS += ("musl-gcc", "cc", "nft", "iptables", "ip")


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _dir_info(path: Path) -> dict[str, Any]:
    # The directory may not exist yet: measure the nearest existing parent.
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
        free = usage.free // (1024 * 1024)
    except OSError:
        free = 0
    return {
        "path": str(path),
        "exists": path.exists(),
        "writable": os.access(existing, os.W_OK),
        "free_mib": free,
    }
