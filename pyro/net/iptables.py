"""The iptables fallback of :mod:`pyro.net.nft`, for hosts without the ``nft`` tool.

The same rules as the nftables table, as iptables rules tagged with the comment
``pyro_<vm id>`` (the nft table's name): teardown deletes exactly the rules carrying the
tag, found with ``iptables-save``. Rules are inserted at the top of their chains, so a
host-wide DROP policy or earlier REJECT rules do not shadow them.
"""

from __future__ import annotations

import shlex

from pyro.net.nft import TapRules

Rule = tuple[str, str, list[str]]  # (table, chain, match and target arguments)


def _guest_out(rules: TapRules, chain: str, *, to_host: bool) -> list[Rule]:
    tap = ["-i", rules.tap]
    out: list[Rule] = [
        ("filter", chain, [*tap, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"])
    ]
    if rules.policy == "egress":
        out.append(("filter", chain, list(tap)))
    elif rules.policy == "allowlist":
        for addr, port in rules.allow:
            if (addr == rules.host_ip) == to_host:
                out.append(("filter", chain, [*tap, "-d", addr, "-p", "tcp", "--dport", str(port)]))
    return [(t, c, [*args, "-j", "ACCEPT"]) for t, c, args in out] + [
        ("filter", chain, [*tap, "-j", "DROP"])
    ]


def rules_for(rules: TapRules) -> list[Rule]:
    """Every rule for one VM, in the order each chain must hold them."""
    found: list[Rule] = []
    guest = rules.guest_ip
    for _, guest_port in rules.publish:
        to_guest = ["-o", rules.tap, "-d", guest, "-p", "tcp", "--dport", str(guest_port)]
        found.append(("filter", "FORWARD", [*to_guest, "-j", "ACCEPT"]))
    found += _guest_out(rules, "FORWARD", to_host=False)
    found += _guest_out(rules, "INPUT", to_host=True)
    found.append(("nat", "POSTROUTING", ["-s", guest, "!", "-o", rules.tap, "-j", "MASQUERADE"]))
    if rules.publish:
        snat = ["-o", rules.tap, "-s", "127.0.0.0/8", "-j", "SNAT", "--to-source", rules.host_ip]
        found.append(("nat", "POSTROUTING", snat))
        for host_port, guest_port in rules.publish:
            dnat = ["-d", "127.0.0.1", "-p", "tcp", "--dport", str(host_port), "-j", "DNAT"]
            found.append(("nat", "OUTPUT", [*dnat, "--to-destination", f"{guest}:{guest_port}"]))
    return found


def insert_commands(rules: TapRules) -> list[list[str]]:
    """``iptables -t T -I CHAIN N …`` commands; N keeps each chain's rules in order on top."""
    position: dict[tuple[str, str], int] = {}
    commands = []
    for table, chain, args in rules_for(rules):
        n = position[table, chain] = position.get((table, chain), 0) + 1
        tag = ["-m", "comment", "--comment", rules.table]
        commands.append(["iptables", "-t", table, "-I", chain, str(n), *tag, *args])
    return commands


def delete_commands(saved: dict[str, str], tag: str) -> list[list[str]]:
    """``iptables -t T -D …`` for every rule carrying ``tag`` in ``iptables-save`` output."""
    commands = []
    for table, text in saved.items():
        for line in text.splitlines():
            words = shlex.split(line)
            if len(words) > 2 and words[0] == "-A" and tag in words:
                commands.append(["iptables", "-t", table, "-D", *words[1:]])
    return commands
