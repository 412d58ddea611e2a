"""Firecracker networking: a TAP device per VM, addresses from a pool, nftables NAT/filter.

Every VM holds a *lease*: ``$PYRO_STATE_DIR/net/leases/<vm id>.json`` names its /30
subnet (from ``$PYRO_NET_POOL``, default ``172.29.0.0/16``), TAP device, nftables table,
network namespace (tests) and the process that set it up. Allocation happens under a file
lock, so concurrent pyro processes never hand out one subnet twice.

Teardown (``delete table``, ``ip link del``, remove the lease) is idempotent and runs on
every exit path: the backend's ``kill``, and :func:`reap_leases` from the VM registry's
``reap`` for leases whose VM is no longer running and whose owner process died
(``kill -9`` between set-up and the VM record). Needs root (CAP_NET_ADMIN).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from pyro import paths
from pyro.errors import NetworkError
from pyro.net import iptables
from pyro.net.nft import TapRules, render, table_name
from pyro.net.relay import ipv4_literal, special_reason
from pyro.net.slirp import parse_allow
from pyro.process.identity import own_identity, process_alive

if TYPE_CHECKING:
    from pyro.net.policy import NetworkConfig

DEFAULT_POOL = "172.29.0.0/16"
POOL_ENV = "PYRO_NET_POOL"
FIREWALL_ENV = "PYRO_NET_FIREWALL"
SUBNET_PREFIX = 30


@dataclass(frozen=True)
class TapLease:
    """One VM's share of the pool and the host objects made for it."""

    vm_id: str
    tap: str
    host_ip: str
    guest_ip: str
    prefix: int
    mac: str
    table: str
    netns: str | None
    owner_pid: int
    owner_ticks: float
    dns: str = ""
    #: "nft", or "iptables" on hosts without nft (see pyro.net.iptables).
    firewall: str = "nft"

    def guest_cmdline(self, hosts: tuple[tuple[str, str], ...] = ()) -> tuple[str, ...]:
        """Kernel parameters for the agent's network set-up (see net.c)."""
        net = f"pyro.net={self.guest_ip}/{self.prefix},{self.host_ip}"
        params: tuple[str, ...] = (net + (f",{self.dns}" if self.dns else ""),)
        if hosts:
            params += ("pyro.hosts=" + ",".join(f"{n}={a}" for n, a in hosts),)
        return params


def tap_name(vm_id: str) -> str:
    """The TAP device of ``vm_id`` (≤ 15 bytes, the kernel's limit)."""
    return ("pt" + "".join(c for c in vm_id if c.isalnum()))[:15]


def _mac(index: int) -> str:
    # Locally administered unicast (02:…), unique per pool slot.
    return "02:50:59:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (16, 8, 0))


def _run(argv: list[str], *, netns: str | None, stdin: str | None = None) -> str:
    # ip, nft, sysctl live in /usr/sbin, which a non-login root shell may lack on PATH.
    argv = [_which(argv[0]) or argv[0], *argv[1:]]
    if netns and Path(argv[0]).name == "ip":
        argv = [argv[0], "-n", netns, *argv[1:]]
    elif netns:
        argv = [_which("ip") or "ip", "netns", "exec", netns, *argv]
    try:
        return subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except FileNotFoundError as exc:
        raise NetworkError(
            f"cannot set up the VM's network: {argv[0]} is not installed",
            "install iproute2 and nftables or iptables (apt install iproute2 nftables)",
        ) from exc
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise NetworkError(
            f"cannot set up the VM's network: '{' '.join(argv)}' failed: "
            + (detail[-1] if detail else f"exit status {exc.returncode}"),
            "this needs root (CAP_NET_ADMIN); run 'pyro doctor' to see network support",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"cannot set up the VM's network: {argv[0]} hung") from exc


def _resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise NetworkError(
            f"allowlist host {host!r} does not resolve on this host: {exc}",
            "check the name, or allow an IPv4 address instead",
        ) from exc
    return sorted({str(info[4][0]) for info in infos})


def _host_dns() -> str:
    """The host's first non-loopback nameserver (a loopback one is unreachable from a guest)."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                addr = ipaddress.ip_address(parts[1])
                if addr.version == 4 and not addr.is_loopback:
                    return str(addr)
    return ""


class TapNetwork:
    """Leases, TAP devices and nftables tables of Firecracker VMs under one state dir."""

    def __init__(
        self, state: Path | None = None, *, netns: str | None = None, pool: str | None = None
    ) -> None:
        self.root = (state or paths.state_dir()) / "net"
        self.netns = netns
        self.pool = ipaddress.IPv4Network(pool or os.environ.get(POOL_ENV) or DEFAULT_POOL)

    def _lease_path(self, vm_id: str) -> Path:
        return self.root / "leases" / f"{vm_id}.json"

    def leases(self) -> list[TapLease]:
        """Every lease on record (unreadable files are skipped)."""
        found = []
        for path in sorted((self.root / "leases").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                found.append(TapLease(**json.loads(path.read_text())))
        return found

    def _allocate(self, vm_id: str) -> TapLease:
        subnets = self.pool.subnets(new_prefix=SUBNET_PREFIX)
        paths.private_dir(self.root.parent)
        paths.private_dir(self.root / "leases")
        paths.private_dir(self.root)
        pool_lock = str(self.root / "pool.lock")
        with FileLock(pool_lock, timeout=60, mode=paths.PRIVATE_FILE_MODE):
            used = {lease.guest_ip for lease in self.leases()}
            for index, subnet in enumerate(subnets):
                host_ip, guest_ip = (str(a) for a in list(subnet.hosts())[:2])
                if guest_ip in used:
                    continue
                pid, ticks = own_identity()
                lease = TapLease(
                    vm_id=vm_id,
                    tap=tap_name(vm_id),
                    host_ip=host_ip,
                    guest_ip=guest_ip,
                    prefix=SUBNET_PREFIX,
                    mac=_mac(index),
                    table=table_name(vm_id),
                    netns=self.netns,
                    owner_pid=pid,
                    owner_ticks=ticks,
                    firewall=_firewall(),
                )
                paths.write_private(self._lease_path(vm_id), json.dumps(asdict(lease)))
                return lease
        raise NetworkError(
            f"the address pool {self.pool} is exhausted",
            f"delete VMs you no longer need, or set {POOL_ENV} to a larger range",
        )

    def setup(self, vm_id: str, net: NetworkConfig) -> tuple[TapLease, tuple[tuple[str, str], ...]]:
        """Lease addresses, create the TAP device and the VM's nftables table.

        Returns the lease and the /etc/hosts entries (name, address) for the guest.

        Raises:
            NetworkError: when a tool is missing, a command fails (everything made so far
                is removed again) or the pool is exhausted.
        """
        self.teardown(vm_id)  # a persistent VM starting again after a crash
        lease = self._allocate(vm_id)
        try:
            allow, hosts = self._allow_pairs(net, lease)
            if net.policy == "egress":
                lease = TapLease(**{**asdict(lease), "dns": _host_dns()})
                paths.write_private(self._lease_path(vm_id), json.dumps(asdict(lease)))
            _run(["ip", "tuntap", "add", "dev", lease.tap, "mode", "tap"], netns=self.netns)
            _run(
                ["ip", "addr", "add", f"{lease.host_ip}/{lease.prefix}", "dev", lease.tap],
                netns=self.netns,
            )
            _run(["ip", "link", "set", lease.tap, "up"], netns=self.netns)
            rules = TapRules(
                table=lease.table,
                tap=lease.tap,
                host_ip=lease.host_ip,
                guest_ip=lease.guest_ip,
                policy=net.policy,
                allow=allow,
                publish=net.publish,
            )
            if lease.firewall == "nft":
                # Create-then-delete makes the script idempotent, in one transaction.
                script = f"table ip {lease.table}\ndelete table ip {lease.table}\n"
                _run([_nft(), "-f", "-"], netns=self.netns, stdin=script + render(rules))
            else:
                for command in iptables.insert_commands(rules):
                    _run([_which("iptables") or "iptables", *command[1:]], netns=self.netns)
            if net.policy != "off":
                _run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=self.netns)
            if net.publish:
                key = f"net.ipv4.conf.{lease.tap}.route_localnet=1"
                _run(["sysctl", "-qw", key], netns=self.netns)
        except BaseException:
            self.teardown(vm_id)
            raise
        return lease, hosts

    def _allow_pairs(
        self, net: NetworkConfig, lease: TapLease
    ) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
        pairs: list[tuple[str, int]] = []
        hosts: list[tuple[str, str]] = []
        for entry in net.allow if net.policy == "allowlist" else ():
            host, ports = parse_allow(entry)  # an IPv4 address in any form comes dotted
            literal = ipv4_literal(host)
            if host == "localhost" or (literal is not None and literal.startswith("127.")):
                addresses = [lease.host_ip]  # the host's own services, at its TAP address
            elif literal is not None:
                addresses = [literal]  # named explicitly: allowed as it is
            else:
                # A name never leads to loopback, link-local or metadata addresses (as
                # with the QEMU relay); resolved once, here, so no later lookup can move it.
                addresses = _resolve(host)
                refused = [a for a in addresses if special_reason(a) is not None]
                addresses = [a for a in addresses if a not in refused]
                if not addresses:
                    raise NetworkError(
                        f"allowlist host {host!r} resolves only to {', '.join(refused)}, "
                        f"which a name may not lead to ({special_reason(refused[0])})",
                        "name the address itself in the allowlist to allow it",
                    )
                hosts.append((host, addresses[0]))
            pairs += [(addr, port) for addr in addresses for port in ports]
        return tuple(dict.fromkeys(pairs)), tuple(dict.fromkeys(hosts))

    def teardown(self, vm_id: str) -> None:
        """Remove the VM's nftables table, TAP device and lease; missing pieces are fine."""
        path = self._lease_path(vm_id)
        try:
            lease: TapLease | None = TapLease(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            lease = None
        netns = lease.netns if lease else self.netns
        table = lease.table if lease else table_name(vm_id)
        tap = lease.tap if lease else tap_name(vm_id)
        if lease is None or lease.firewall == "nft":
            with contextlib.suppress(NetworkError):
                _run([_nft(), "delete", "table", "ip", table], netns=netns)
        if (lease is None or lease.firewall == "iptables") and _which("iptables-save"):
            _drop_iptables_rules(table, netns)
        with contextlib.suppress(NetworkError):
            _run(["ip", "link", "del", tap], netns=netns)
        path.unlink(missing_ok=True)


def _firewall() -> str:
    """``$PYRO_NET_FIREWALL`` (nft or iptables), else nft when installed, else iptables."""
    chosen = os.environ.get(FIREWALL_ENV, "")
    if chosen in ("nft", "iptables"):
        return chosen
    if chosen:
        raise NetworkError(
            f"{FIREWALL_ENV}={chosen!r} is not a firewall pyro knows",
            f"set {FIREWALL_ENV} to nft or iptables, or unset it",
        )
    return "nft" if _which("nft") else "iptables"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _nft() -> str:
    return _which("nft") or "nft"


def _drop_iptables_rules(tag: str, netns: str | None) -> None:
    saved = {}
    for table in ("filter", "nat"):
        with contextlib.suppress(NetworkError):
            saved[table] = _run([_which("iptables-save") or "", "-t", table], netns=netns)
    for command in iptables.delete_commands(saved, tag):
        with contextlib.suppress(NetworkError):
            _run([_which("iptables") or "iptables", *command[1:]], netns=netns)


def owner_alive(lease: TapLease) -> bool:
    """True while the process that made ``lease`` runs (same PID *and* start ticks)."""
    return process_alive(lease.owner_pid, lease.owner_ticks)


def reap_leases(state: Path, vm_running: Callable[[str], bool]) -> list[str]:
    """Tear down leases whose VM is not running and whose owner process is gone.

    Called by the VM registry's ``reap``; returns the VM ids whose network was removed.
    """
    net = TapNetwork(state)
    reaped = []
    for lease in net.leases():
        if vm_running(lease.vm_id) or owner_alive(lease):
            continue
        net.teardown(lease.vm_id)
        reaped.append(lease.vm_id)
    return reaped
