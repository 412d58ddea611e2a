"""Host side of the guest agent protocol (docs/agent-protocol.md); the C agent is in agent/.

Names are resolved on first use: planning asks only for the agent's digest and never
loads the protocol client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyro.lazy import lazy_attributes

if TYPE_CHECKING:
    from pyro.guest.build import agent_digest, agent_source_digest, build_agent_initrd
    from pyro.guest.client import AgentClient
    from pyro.guest.results import AgentInfo, ExecResult, GuestRequestError, GuestStat

_HOMES = {
    "AgentClient": "pyro.guest.client",
    "AgentInfo": "pyro.guest.results",
    "ExecResult": "pyro.guest.results",
    "GuestRequestError": "pyro.guest.results",
    "GuestStat": "pyro.guest.results",
    "agent_digest": "pyro.guest.build",
    "agent_source_digest": "pyro.guest.build",
    "build_agent_initrd": "pyro.guest.build",
}

__all__ = [
    "AgentClient",
    "AgentInfo",
    "ExecResult",
    "GuestRequestError",
    "GuestStat",
    "agent_digest",
    "agent_source_digest",
    "build_agent_initrd",
]


__getattr__ = lazy_attributes(__name__, _HOMES)
