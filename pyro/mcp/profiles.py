"""Which tools each ``pyro mcp serve --profile`` exposes. Pure data: importing it loads no ``mcp``.

The smaller profiles exist because a model picks tools better from a short list: ``vm-run``
is enough for "run this command somewhere safe", ``task-core`` adds state across calls.
"""

from __future__ import annotations

VM_TOOLS = (
    "vm_create",
    "vm_start",
    "vm_exec",
    "vm_stop",
    "vm_delete",
    "vm_status",
    "vm_logs",
    "vm_list",
)
TASK_TOOLS = ("task_create", "task_exec", "task_status", "task_logs", "task_delete", "task_list")

#: profile name -> tool names, in the order they are listed to the client.
PROFILES: dict[str, tuple[str, ...]] = {
    "vm-run": ("vm_run",),
    "task-core": ("vm_run", "env_list", *TASK_TOOLS, "plan", "apply"),
    "full": (
        "vm_run",
        *VM_TOOLS,
        *TASK_TOOLS,
        "env_list",
        "env_pull",
        "spec_validate",
        "plan",
        "apply",
    ),
}
DEFAULT_PROFILE = "full"


def tool_names(profile: str) -> tuple[str, ...]:
    """The tools of ``profile``.

    Raises:
        UsageError: unknown profile.
    """
    from pyro.errors import UsageError

    try:
        return PROFILES[profile]
    except KeyError:
        raise UsageError(
            f"unknown MCP profile '{profile}'", f"choose one of: {', '.join(PROFILES)}"
        ) from None
