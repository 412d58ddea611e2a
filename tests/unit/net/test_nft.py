"""The nftables ruleset of one Firecracker VM (text only; the netns e2e test loads it)."""

from __future__ import annotations

from pyro.net.nft import TapRules, render, table_name

BASE = {"table": "pyro_abc", "tap": "ptabc", "host_ip": "172.29.0.1", "guest_ip": "172.29.0.2"}


def test_egress_accepts_and_masquerades() -> None:
    text = render(TapRules(policy="egress", **BASE))
    assert text.startswith("table ip pyro_abc {")
    assert 'iifname "ptabc" accept' in text
    assert 'ip saddr 172.29.0.2 oifname != "ptabc" masquerade' in text
    assert "dnat" not in text


def test_allowlist_accepts_only_listed_pairs() -> None:
    rules = TapRules(
        policy="allowlist", allow=(("93.184.216.34", 443), ("172.29.0.1", 8080)), **BASE
    )
    text = render(rules)
    forward, inbound = text.split("chain input")
    assert "93.184.216.34 . 443" in forward and "8080" not in forward
    assert "172.29.0.1 . 8080" in inbound and "443" not in inbound
    assert 'iifname "ptabc" accept' not in text
    assert forward.index("93.184.216.34 . 443") < forward.index('iifname "ptabc" drop')


def test_off_drops_everything_from_the_guest() -> None:
    text = render(TapRules(policy="off", **BASE))
    assert text.count('iifname "ptabc" drop') == 2
    assert 'iifname "ptabc" accept' not in text


def test_publish_dnats_loopback_to_the_guest() -> None:
    text = render(TapRules(policy="off", publish=((18080, 80),), **BASE))
    assert "ip daddr 127.0.0.1 tcp dport 18080 dnat to 172.29.0.2:80" in text
    assert 'oifname "ptabc" ip saddr 127.0.0.0/8 snat to 172.29.0.1' in text


def test_table_name_is_nft_safe() -> None:
    assert table_name("ab-12.x") == "pyro_ab_12_x"
