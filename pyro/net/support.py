"""What guest networking this host supports, for ``pyro doctor``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

Status = Literal["PASS", "WARN", "FAIL"]
DEV_TUN = Path("/dev/net/tun")


def qemu_has_slirp(binary: str = "qemu-system-x86_64") -> bool | None:
    """True when QEMU lists the ``user`` netdev (libslirp); None when QEMU is missing."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "-netdev", "help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "user" in out.split()


def network_checks() -> list[tuple[str, Status, str]]:
    """(name, status, detail) for QEMU user-mode networking and Firecracker TAP networking."""
    checks: list[tuple[str, Status, str]] = []
    slirp = qemu_has_slirp()
    if slirp is None:
        checks.append(("network qemu", "WARN", "qemu-system-x86_64 missing: no QEMU networking"))
    elif slirp:
        checks.append(
            (
                "network qemu",
                "PASS",
                "user-mode networking (libslirp): egress, allowlist and published ports",
            )
        )
    else:
        checks.append(
            (
                "network qemu",
                "WARN",
                "this QEMU has no user-mode networking (libslirp): only policy 'off' works",
            )
        )
    sbin = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")
    missing = [
        what
        for what, ok in (
            ("/dev/net/tun", DEV_TUN.exists()),
            ("root", os.geteuid() == 0),
            ("ip (iproute2)", shutil.which("ip", path=sbin) is not None),
            (
                "nft or iptables",
                any(shutil.which(tool, path=sbin) for tool in ("nft", "iptables")),
            ),
        )
        if not ok
    ]
    checks.append(
        (
            "network firecracker",
            "WARN" if missing else "PASS",
            f"TAP networking unavailable, missing: {', '.join(missing)}"
            if missing
            else "TAP devices with nftables NAT and filtering",
        )
    )
    return checks
