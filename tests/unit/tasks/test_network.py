"""A task's network policy as callers give it: the Run spec's checks, in every face's words."""

from __future__ import annotations

import pytest

from pyro.errors import UsageError
from pyro.net.policy import NetworkConfig
from pyro.tasks.network import MAX_ALLOW, MAX_PUBLISH, describe, network_config


def test_the_three_ways_to_give_a_published_port_agree() -> None:
    want = NetworkConfig(policy="egress", publish=((8080, 80), (8081, 81), (8082, 82)))
    got = network_config("egress", publish=[(8080, 80), {"host": 8081, "guest": 81}, "8082:82"])
    assert got == want
    assert describe(got) == (
        "egress; 127.0.0.1:8080 -> guest 80, 127.0.0.1:8081 -> guest 81, 127.0.0.1:8082 -> guest 82"
    )
    allow = network_config("allowlist", allow=["pypi.org:443"])
    assert describe(allow) == "allowlist (pypi.org:443)"
    assert network_config() == NetworkConfig()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "open"}, "network policy 'open' is not one of: off, egress, allowlist"),
        ({"policy": "allowlist"}, "policy 'allowlist' needs at least one entry in 'allow'"),
        ({"policy": "egress", "allow": ["a.org"]}, "'allow' is only valid with policy"),
        ({"publish": ["8080"]}, "published port '8080' is not HOST:GUEST"),
        ({"publish": ["²:80"]}, "published port '²:80' is not HOST:GUEST"),
        ({"publish": ["0:80"]}, "publish.0.host 0: Input should be greater than or equal to 1"),
        ({"publish": [(8080, 65536)]}, "publish.0.guest 65536: Input should be less than"),
        ({"publish": [(8080, "80")]}, "publish.0.guest '80': Input should be a valid integer"),
        ({"publish": ["8080:80", "8080:81"]}, "each host port may be published once"),
        ({"publish": [object()]}, "is not a (host, guest) pair"),
        ({"policy": "allowlist", "allow": ["bad host"]}, "allow.0 'bad host': String should"),
        ({"publish": [f"{20000 + i}:80" for i in range(MAX_PUBLISH + 1)]}, "at most 32 published"),
        (
            {"policy": "allowlist", "allow": ["a.org"] * (MAX_ALLOW + 1)},
            "at most 64 allow, not 65",
        ),
    ],
)
def test_bad_policies_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        network_config(**kwargs)  # type: ignore[arg-type]
    assert message in caught.value.summary
    assert caught.value.hint
