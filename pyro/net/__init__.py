"""Guest networking: a spec's network policy turned into VMM arguments and host plumbing.

- :mod:`pyro.net.policy`: the policy itself (``NetworkConfig``), as plans, records and
  backends hold it
- :mod:`pyro.net.slirp`: QEMU user-mode networking (egress, allowlist, published ports)
- :mod:`pyro.net.relay`: the per-connection relay QEMU runs for allowlist destinations
- :mod:`pyro.net.ports`: published host ports checked before boot
- :mod:`pyro.net.tap`: Firecracker's TAP device, address pool and nftables rules
- :mod:`pyro.net.support`: what guest networking this host supports (``pyro doctor``)

See docs/networking.md for the design and its limits.
"""
