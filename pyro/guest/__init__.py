"""Host side of the guest agent protocol (docs/agent-protocol.md); the C agent is in agent/."""

from __future__ import annotations

from pyro.guest.build import agent_digest, agent_source_digest, build_agent_initrd
from pyro.guest.client import AgentClient
from pyro.guest.results import AgentInfo, ExecResult, GuestRequestError, GuestStat

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
