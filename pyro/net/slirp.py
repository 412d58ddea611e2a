"""A network policy as QEMU user-mode networking (libslirp) arguments; no root needed.

Addresses inside the guest (they exist only inside the QEMU process):

``10.0.2.15/24``  the guest (eth0, configured by the agent from ``pyro.net=``)
``10.0.2.2``      egress: the host itself (its 127.0.0.1); allowlist: loopback destinations
``10.0.2.3``      egress: slirp's DNS forwarder
``10.0.2.100+``   allowlist: one address per other allowed host (names go to /etc/hosts)
``10.0.2.254``    allowlist: slirp's own address (moved off 10.0.2.2, which guestfwd needs)

Under ``allowlist`` slirp runs with ``restrict=on`` (the guest reaches nothing) and one
``guestfwd`` rule per allowed (address, port). Each guest connection to such a rule starts
:mod:`pyro.net.relay`, which connects to the allowed destination and copies bytes, checks
what a name resolves to at that moment, and ends with the VM's QEMU.

An allowed host that ``inet_aton`` reads as an IPv4 address (``127.1``, ``2130706433``,
``0x7f.1``) is that address, as the kernel would connect to it; it is normalised here so
the plan, the forwards and the relay all see ``127.0.0.1``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyro.errors import NetworkError
from pyro.net.relay import TAG_PREFIX, ipv4_literal

if TYPE_CHECKING:
    from pyro.net.policy import NetworkConfig

GUEST_CIDR = "10.0.2.15/24"
HOST_ALIAS = "10.0.2.2"
DNS = "10.0.2.3"
RESTRICTED_GATEWAY = "10.0.2.254"
FIRST_FORWARD = 100
LAST_FORWARD = 250
#: Ports forwarded for an allow entry without a port.
DEFAULT_PORTS = (80, 443)
#: The kernel command line holds 2048 bytes on x86; leave room for the rest.
MAX_HOSTS_PARAM = 1000
RELAY = Path(__file__).with_name("relay.py")
NETDEV_ID = "net0"
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Forward:
    """One allowed destination as the guest sees it (address, port) and where it goes."""

    guest_addr: str
    guest_port: int
    host: str
    port: int


@dataclass(frozen=True)
class SlirpSetup:
    """What the QEMU backend adds for a network policy."""

    argv: tuple[str, ...]
    cmdline: tuple[str, ...]
    #: QEMU must be allowed to fork/exec (the allowlist's relay per connection).
    needs_spawn: bool
    forwards: tuple[Forward, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()


def parse_allow(entry: str) -> tuple[str, tuple[int, ...]]:
    """``host[:port]`` → (host, ports); no port means :data:`DEFAULT_PORTS`. A host that
    is an IPv4 address in any form ``inet_aton`` accepts comes back dotted (``127.0.0.1``).

    Raises:
        NetworkError: for a malformed host or a port outside 1-65535.
    """
    host, sep, port_text = entry.rpartition(":")
    if not sep:
        host, port_text = entry, ""
    host = host.strip().lower().rstrip(".")
    if not _HOST.match(host):
        raise NetworkError(
            f"allow entry {entry!r} is not host or host:port",
            "use a DNS name or an IPv4 address, optionally with :PORT",
        )
    host = ipv4_literal(host) or host
    if not port_text:
        return host, DEFAULT_PORTS
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise NetworkError(
            f"allow entry {entry!r} has an invalid port", "ports are numbers from 1 to 65535"
        )
    return host, (int(port_text),)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def plan_forwards(allow: tuple[str, ...]) -> tuple[list[Forward], list[tuple[str, str]]]:
    """Guest-visible forwards and /etc/hosts entries (name, address) for an allowlist.

    Loopback destinations (``127.x``, ``localhost``) appear at 10.0.2.2, as under
    ``egress``; every other host gets its own address from 10.0.2.100 on.

    Raises:
        NetworkError: for a malformed entry or more hosts than addresses.
    """
    forwards: dict[tuple[str, int], Forward] = {}
    addresses: dict[str, str] = {}
    hosts: list[tuple[str, str]] = []
    for entry in allow:
        host, ports = parse_allow(entry)
        if _is_loopback(host):
            addr = HOST_ALIAS
            target = "127.0.0.1" if host == "localhost" else host
        else:
            target = host
            if host not in addresses:
                index = FIRST_FORWARD + len(addresses)
                if index > LAST_FORWARD:
                    raise NetworkError(
                        f"the allowlist names more than {LAST_FORWARD - FIRST_FORWARD + 1} hosts",
                        "allow fewer hosts",
                    )
                addresses[host] = f"10.0.2.{index}"
                if not _is_ip(host):
                    hosts.append((host, addresses[host]))
            addr = addresses[host]
        for port in ports:
            forwards.setdefault((addr, port), Forward(addr, port, target, port))
    return list(forwards.values()), hosts


def slirp_setup(net: NetworkConfig, *, vm_id: str = "", python: str | None = None) -> SlirpSetup:
    """QEMU arguments and kernel parameters for ``net`` (nothing for policy ``off``).
    ``vm_id`` tags each relay, so that it finds its QEMU (``-name pyro-<vm id>``) and is
    found when the VM goes (:func:`pyro.net.relay.kill_relays`).

    Raises:
        NetworkError: for a malformed allowlist or one too long for the kernel command line.
    """
    if not net.enabled:
        return SlirpSetup(argv=(), cmdline=(), needs_spawn=False)
    options = [f"user,id={NETDEV_ID}", "ipv6=off"]
    for host_port, guest_port in net.publish:
        options.append(f"hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}")
    forwards: list[Forward] = []
    hosts: list[tuple[str, str]] = []
    if net.policy == "egress":
        cmdline: tuple[str, ...] = (f"pyro.net={GUEST_CIDR},{HOST_ALIAS},{DNS}",)
    else:
        # restrict=on: the guest reaches nothing but the guestfwd rules below.
        options += ["restrict=on", f"host={RESTRICTED_GATEWAY}"]
        cmdline = (f"pyro.net={GUEST_CIDR},{RESTRICTED_GATEWAY}",)
        if net.policy == "allowlist":
            forwards, hosts = plan_forwards(net.allow)
    interpreter = python or sys.executable
    for fwd in forwards:
        # -I -S: isolated, no site-packages; the relay needs only the standard library and
        # starts faster (it starts once per guest connection).
        tag = f"{TAG_PREFIX}{vm_id}"
        words = (interpreter, "-I", "-S", str(RELAY), tag, fwd.host, str(fwd.port))
        # glib splits the command like a shell; QEMU's option parser needs ",," for ",".
        command = " ".join(shlex.quote(w) for w in words).replace(",", ",,")
        options.append(f"guestfwd=tcp:{fwd.guest_addr}:{fwd.guest_port}-cmd:{command}")
    if hosts:
        param = "pyro.hosts=" + ",".join(f"{name}={addr}" for name, addr in hosts)
        if len(param) > MAX_HOSTS_PARAM:
            raise NetworkError(
                f"the allowlist's host names take {len(param)} bytes of the kernel command line "
                f"(at most {MAX_HOSTS_PARAM})",
                "allow fewer or shorter host names, or IP addresses",
            )
        cmdline += (param,)
    argv = ("-netdev", ",".join(options), "-device", f"virtio-net-device,netdev={NETDEV_ID}")
    return SlirpSetup(
        argv=argv,
        cmdline=cmdline,
        needs_spawn=bool(forwards),
        forwards=tuple(forwards),
        hosts=tuple(hosts),
    )
