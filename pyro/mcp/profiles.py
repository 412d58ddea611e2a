"""The ``pyro mcp serve --profile`` names. Pure data: importing it loads no ``mcp``.

The smaller profiles exist because a model picks tools better from a short list: ``vm-run``
is enough for "run this command somewhere safe", ``task-core`` adds state across calls,
``workspace`` is the whole task surface (files, sync, export, snapshots, update) for an
agent that lives in a task. Each has a ``tools/list`` byte budget (:data:`BUDGETS`).
Which tools a profile offers, in which order, each tool declares where it is defined
(:func:`pyro.mcp.tool.tool`).
"""

from __future__ import annotations

#: profile name -> what it offers, as ``--help`` says it (a test checks it against the
#: tools' declarations).
PROFILES: dict[str, str] = {
    "vm-run": "only vm_run",
    "task-core": "vm_run, env_list, task_create, task_exec, task_status, task_logs, "
    "task_delete, task_list, plan, apply",
    "workspace": "env_list, task_*",
    "full": "everything",
}
DEFAULT_PROFILE = "full"
#: profile -> the most bytes its ``tools/list`` may take on the wire (compact JSON; a test
#: measures it through a real stdio client). Every conversation pays for the list.
#: ``full`` grew from 30 000 when the task surface of issue 20 arrived, with room for the
#: shell and service tools; ``workspace`` and ``full`` then by the task state tools of issue
#: 21 (pause, resume, fork, diff, patch: ≈4.4 kB, ``TaskInfo``'s new fields ≈0.5 kB); all
#: three by a task's network and a command's stdin (parameters of task_create/exec, vm_run);
#: ``workspace`` and ``full`` by the twelve shell and service tools of issue 20 (≈10.5 kB
#: with brief results; task-core does not offer them).
BUDGETS: dict[str, int] = {
    "vm-run": 6_000,
    "task-core": 20_000,
    "workspace": 36_500,
    "full": 57_500,
}


def profile_choices() -> str:
    """``vm-run (only vm_run), … or full (everything)``."""
    named = [f"{name} ({offers})" for name, offers in PROFILES.items()]
    return ", ".join(named[:-1]) + " or " + named[-1]


def check_profile(profile: str) -> str:
    """``profile``, when it is one.

    Raises:
        UsageError: unknown profile.
    """
    from pyro.errors import UsageError

    if profile not in PROFILES:
        raise UsageError(
            f"unknown MCP profile '{profile}'", f"choose one of: {', '.join(PROFILES)}"
        )
    return profile
