"""The iptables fallback: rule order, tagging, and deletion from iptables-save output."""

from __future__ import annotations

from pyro.net.iptables import delete_commands, insert_commands
from pyro.net.nft import TapRules

RULES = TapRules(
    table="pyro_ab",
    tap="ptab",
    host_ip="172.29.0.1",
    guest_ip="172.29.0.2",
    policy="allowlist",
    allow=(("93.184.216.34", 443),),
    publish=((18080, 80),),
)


def test_rules_are_tagged_and_numbered_per_chain() -> None:
    commands = insert_commands(RULES)
    assert all(c[:2] == ["iptables", "-t"] and "pyro_ab" in c for c in commands)
    forward = [c for c in commands if c[4] == "FORWARD"]
    assert [c[5] for c in forward] == [str(i) for i in range(1, len(forward) + 1)]
    assert forward[-1][-2:] == ["-j", "DROP"]
    accepts = [c for c in forward if "93.184.216.34" in c]
    assert accepts and accepts[0][-2:] == ["-j", "ACCEPT"]
    dnat = next(c for c in commands if "DNAT" in c)
    assert dnat[2:5] == ["nat", "-I", "OUTPUT"] and dnat[-1] == "172.29.0.2:80"


def test_egress_accepts_everything_from_the_tap() -> None:
    rules = TapRules(**{**RULES.__dict__, "policy": "egress", "allow": (), "publish": ()})
    forward = [c[6:] for c in insert_commands(rules) if c[4] == "FORWARD"]
    assert ["-m", "comment", "--comment", "pyro_ab", "-i", "ptab", "-j", "ACCEPT"] in forward


def test_delete_commands_match_the_exact_tag_only() -> None:
    saved = {
        "filter": (
            "*filter\n"
            "-A FORWARD -i ptab -m comment --comment pyro_ab -j DROP\n"
            "-A FORWARD -i ptabc -m comment --comment pyro_abc -j DROP\n"
            "-A INPUT -j ACCEPT\nCOMMIT\n"
        ),
        "nat": "-A POSTROUTING -s 172.29.0.2/32 -m comment --comment pyro_ab -j MASQUERADE\n",
    }
    assert delete_commands(saved, "pyro_ab") == [
        ["iptables", "-t", "filter", "-D", "FORWARD", "-i", "ptab", "-m", "comment", "--comment",
         "pyro_ab", "-j", "DROP"],
        ["iptables", "-t", "nat", "-D", "POSTROUTING", "-s", "172.29.0.2/32", "-m", "comment",
         "--comment", "pyro_ab", "-j", "MASQUERADE"],
    ]  # fmt: skip
