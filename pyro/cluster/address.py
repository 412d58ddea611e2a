"""A cluster address as users write it: ``ray://HOST:PORT`` (the Ray client's)."""

from __future__ import annotations

import re

from pyro.errors import UsageError

#: The environment variable ``pyro apply`` reads when ``--on`` is not given.
CLUSTER_ENV = "PYRO_CLUSTER"
_ADDRESS = re.compile(
    r"^ray://(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$"
)


def parse_cluster(address: str) -> str:
    """``address`` checked: ``ray://HOST:PORT`` with a port from 1 to 65535.

    Raises:
        UsageError: anything else (what to write instead is in the hint).
    """
    match = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise UsageError(
            f"{address!r} is not a cluster address",
            "write ray://HOST:PORT, the Ray client address of the cluster's head node "
            "(ray start --head --ray-client-server-port PORT)",
        )
    return address.strip()
