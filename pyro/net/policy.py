"""The guest's network policy: one value shared by the plan's boot step, the VM record and
the VMM backends.

It is plain data; :mod:`pyro.net.slirp` (QEMU) and :mod:`pyro.net.tap` (Firecracker) turn it
into VMM arguments and host plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyro.errors import VMMError


@dataclass(frozen=True)
class NetworkConfig:
    """The guest's network policy, as the plan's boot step and the VM record state it.

    ``policy`` is ``off`` (no device; with ``publish`` a device that reaches nothing),
    ``egress`` (outbound traffic allowed) or ``allowlist`` (only ``allow`` entries,
    ``host[:port]``, are reachable). ``publish`` pairs are (host port on 127.0.0.1, guest
    port). :mod:`pyro.net` turns this into VMM arguments.
    """

    policy: str = "off"
    allow: tuple[str, ...] = ()
    publish: tuple[tuple[int, int], ...] = ()

    @property
    def enabled(self) -> bool:
        """True when the guest gets a network device."""
        return self.policy != "off" or bool(self.publish)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "allow": list(self.allow),
            "publish": [{"host": h, "guest": g} for h, g in self.publish],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NetworkConfig:
        """Read ``{policy, allow, publish: [{host, guest}]}`` (None: policy off).

        Raises:
            VMMError: when ``data`` is malformed.
        """
        if not data:
            return cls()
        try:
            policy = str(data.get("policy", "off"))
            if policy not in ("off", "egress", "allowlist"):
                raise ValueError(f"unknown policy {policy!r}")
            return cls(
                policy=policy,
                allow=tuple(str(a) for a in data.get("allow") or ()),
                publish=tuple((int(p["host"]), int(p["guest"])) for p in data.get("publish") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VMMError(
                f"network configuration is malformed: {exc}",
                hint="use {policy: off|egress|allowlist, allow: [...], publish: [{host, guest}]}",
            ) from exc
