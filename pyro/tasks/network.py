"""A task's network policy: the Run spec's ``network`` (off, egress, allowlist; published
ports), checked by the spec's own model, stored on the task's VM record and applied at
every boot of the task (create, ``task start``, an exec booting a stopped task).

Published host ports bind to 127.0.0.1 only; a taken port, or one below 1024 for a user
who is not root, fails the boot with a message naming the port (:mod:`pyro.net.ports`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from pyro.errors import UsageError
from pyro.net.policy import NetworkConfig

#: The most published ports and allow entries one task may have (MCP callers are not
#: trusted; a spec's allowlist is bounded by what slirp can address, see pyro.net.slirp).
MAX_PUBLISH = 32
MAX_ALLOW = 64
POLICIES = ("off", "egress", "allowlist")
_PUBLISH = re.compile(r"([0-9]{1,9}):([0-9]{1,9})", re.ASCII)

#: A published port as callers give it: (host, guest), {"host": H, "guest": G} or "H:G".
PublishItem = tuple[int, int] | Mapping[str, Any] | str


def parse_publish(item: PublishItem) -> dict[str, Any]:
    """One published port as the spec writes it, ``{"host": H, "guest": G}``.

    Raises:
        UsageError: a string that is not ``HOST:GUEST``, or an item of another shape.
    """
    if isinstance(item, str):
        match = _PUBLISH.fullmatch(item)
        if match is None:
            raise UsageError(
                f"published port {item!r} is not HOST:GUEST",
                "write the host port on 127.0.0.1, a colon and the guest port, e.g. 8080:80",
            )
        return {"host": int(match[1]), "guest": int(match[2])}
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return {"host": item[0], "guest": item[1]}
    raise UsageError(
        f"published port {item!r} is not a (host, guest) pair",
        "give (8080, 80), {'host': 8080, 'guest': 80} or '8080:80'",
    )


def network_config(
    policy: str = "off",
    allow: Sequence[str] = (),
    publish: Sequence[PublishItem] = (),
) -> NetworkConfig:
    """The task's policy, validated as a Run spec's ``network`` is.

    Raises:
        UsageError: an unknown policy, allow entries without ``allowlist`` (or none with
            it), a malformed entry, a port outside 1-65535, a host port given twice, too
            many entries.
    """
    from pyro.spec.model import Network

    if policy not in POLICIES:
        raise UsageError(
            f"network policy {policy!r} is not one of: {', '.join(POLICIES)}",
            "off: no network; egress: outbound traffic; allowlist: only the --allow entries",
        )
    for what, items, most in (
        ("published ports", publish, MAX_PUBLISH),
        ("allow", allow, MAX_ALLOW),
    ):
        if len(items) > most:
            raise UsageError(
                f"a task takes at most {most} {what}, not {len(items)}", f"give fewer {what}"
            )
    data = {"policy": policy, "allow": list(allow), "publish": [parse_publish(p) for p in publish]}
    try:
        model = Network.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(error, data) for error in exc.errors())
        raise UsageError(
            f"the task's network is invalid: {problems}",
            "policy off|egress|allowlist, allow HOST[:PORT] (allowlist only), publish "
            "HOST:GUEST with ports 1-65535, each host port once (docs/networking.md)",
        ) from exc
    return NetworkConfig.from_dict(model.model_dump(mode="json"))


def _problem(error: Any, data: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    where = ".".join(loc)
    value: Any = data
    for part in error.get("loc", ()):
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = None
            break
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if where and value is not None and not isinstance(value, (dict, list)):
        return f"{where} {value!r}: {message}"
    return f"{where}: {message}" if where else message


def describe(config: NetworkConfig) -> str:
    """One line: the policy, what it allows and the published ports (host ↔ guest)."""
    text = config.policy
    if config.allow:
        text += " (" + ", ".join(config.allow) + ")"
    if config.publish:
        text += "; " + ", ".join(f"127.0.0.1:{h} -> guest {g}" for h, g in config.publish)
    return text
