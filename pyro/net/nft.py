"""nftables rules for one Firecracker VM's TAP device (pure: text in, text out).

Each VM gets its own table ``ip pyro_<vm id>``, so teardown is one ``delete table`` and
never touches rules anybody else wrote. Chains:

``forward``      guest → elsewhere: everything (egress), the allowed (address, port)
                 pairs (allowlist) or nothing (off); replies to published ports
``input``        guest → the host itself: the same rule, for the host's TAP address
``postrouting``  masquerade the guest behind the host; SNAT published-port traffic
``output``       published ports: 127.0.0.1:HOST → guest:GUEST (DNAT)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TapRules:
    """What the rules need to know about one VM."""

    table: str
    tap: str
    host_ip: str
    guest_ip: str
    policy: str
    #: Allowlist destinations as (IPv4 address, TCP port); the host's TAP address stands
    #: for the host's own services.
    allow: tuple[tuple[str, int], ...] = ()
    publish: tuple[tuple[int, int], ...] = ()


def table_name(vm_id: str) -> str:
    """The nftables table of ``vm_id`` (letters, digits and ``_`` only)."""
    return "pyro_" + "".join(c if c.isalnum() else "_" for c in vm_id)


def _guest_out(rules: TapRules, *, to_host: bool) -> list[str]:
    """Rules for traffic the guest starts, either to the host itself or through it."""
    iif = f'iifname "{rules.tap}"'
    lines = [f"{iif} ct state established,related accept"]
    if rules.policy == "egress":
        lines.append(f"{iif} accept")
    elif rules.policy == "allowlist":
        pairs = [(addr, port) for addr, port in rules.allow if (addr == rules.host_ip) == to_host]
        if pairs:
            elements = ", ".join(f"{addr} . {port}" for addr, port in pairs)
            lines.append(f"{iif} ip daddr . tcp dport {{ {elements} }} accept")
    lines.append(f"{iif} drop")
    return lines


def render(rules: TapRules) -> str:
    """The ``nft -f`` script that creates the VM's table (atomically: one transaction)."""
    tap, guest = rules.tap, rules.guest_ip
    forward = _guest_out(rules, to_host=False)
    for _, guest_port in rules.publish:
        forward.insert(0, f'oifname "{tap}" ip daddr {guest} tcp dport {guest_port} accept')
    inbound = _guest_out(rules, to_host=True)
    post = [f'ip saddr {guest} oifname != "{tap}" masquerade']
    out: list[str] = []
    if rules.publish:
        # Locally made packets to 127.0.0.1 DNATed to the guest keep their loopback
        # source unless rewritten; the guest could not answer them otherwise.
        post.append(f'oifname "{tap}" ip saddr 127.0.0.0/8 snat to {rules.host_ip}')
        for host_port, guest_port in rules.publish:
            out.append(f"ip daddr 127.0.0.1 tcp dport {host_port} dnat to {guest}:{guest_port}")

    def chain(name: str, hook: str, kind: str, priority: int, body: list[str]) -> str:
        head = f"    type {kind} hook {hook} priority {priority}; policy accept;"
        return "\n".join([f"  chain {name} {{", head, *(f"    {line}" for line in body), "  }"])

    chains = [
        chain("forward", "forward", "filter", 0, forward),
        chain("input", "input", "filter", 0, inbound),
        chain("postrouting", "postrouting", "nat", 100, post),
    ]
    if out:
        chains.append(chain("output", "output", "nat", -100, out))
    return f"table ip {rules.table} {{\n" + "\n".join(chains) + "\n}\n"
