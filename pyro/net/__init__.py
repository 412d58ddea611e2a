"""Guest networking: a spec's network policy turned into VMM arguments and host plumbing.

- :mod:`pyro.net.slirp`: QEMU user-mode networking (egress, allowlist, published ports)
- :mod:`pyro.net.relay`: the per-connection relay QEMU runs for allowlist destinations
- :mod:`pyro.net.ports`: published host ports checked before boot
- :mod:`pyro.net.tap`: Firecracker's TAP device, address pool and nftables rules

See docs/networking.md for the design and its limits.
"""

from __future__ import annotations

from pyro.net.ports import check_ports_free
from pyro.net.slirp import SlirpSetup, parse_allow, plan_forwards, slirp_setup

__all__ = ["SlirpSetup", "check_ports_free", "parse_allow", "plan_forwards", "slirp_setup"]
