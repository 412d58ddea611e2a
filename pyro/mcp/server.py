"""The pyro MCP server: one :class:`MCPServer` whose tools are chosen by a profile."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations

from pyro.__about__ import __version__
from pyro.mcp.calls import pyro_tool
from pyro.mcp.profiles import DEFAULT_PROFILE, tool_names
from pyro.mcp.schema import embed_spec_schema
from pyro.mcp.tools_env import EnvTools
from pyro.mcp.tools_spec import SpecTools
from pyro.mcp.tools_task import TaskTools
from pyro.mcp.tools_vm import VMTools
from pyro.sdk import Pyro

INSTRUCTIONS = """\
pyro runs commands inside ephemeral Linux microVMs, isolated from the host.

Start with vm_run: one command (or one Run spec) in a fresh VM that is always deleted
afterwards. It returns exit_code, stdout and stderr; exit code 124 means a timeout.
Use task_create + task_exec only when later commands must see files or state left by
earlier ones, and task_delete when done. The vm_* tools manage single VMs by hand; note
that vm_exec deletes its VM after the command. env_list shows the environments
(e.g. debian:12). spec_validate, plan and apply take a spec document as JSON
(apiVersion pyro/v1, kind Run) plus optional vars; plan shows what apply would do.
Errors come back as tool errors with a hint, and for specs the JSON pointer of the problem.
Host paths (a spec's files[].source, an environment given as a path, seed_path) must be
inside the server's root folder (your declared roots, else PYRO_MCP_ROOT or the server's
working directory); relative ones start there. Artifacts are copied into a new folder
under .pyro-artifacts/ there, named by artifacts_dir in the result.
"""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)
RUNS = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)

#: tool -> how a client may treat it (all pyro tools act on local VMs only, except that a
#: guest command may reach the network when asked to).
ANNOTATIONS: dict[str, ToolAnnotations] = {
    "vm_run": RUNS,
    "vm_create": RUNS,
    "vm_start": RUNS,
    "vm_exec": DESTRUCTIVE,
    "vm_stop": DESTRUCTIVE,
    "vm_delete": DESTRUCTIVE,
    "vm_status": READ_ONLY,
    "vm_logs": READ_ONLY,
    "vm_list": READ_ONLY,
    "task_create": RUNS,
    "task_exec": RUNS,
    "task_status": READ_ONLY,
    "task_logs": READ_ONLY,
    "task_delete": DESTRUCTIVE,
    "task_list": READ_ONLY,
    "env_list": READ_ONLY,
    "env_pull": RUNS,
    "spec_validate": READ_ONLY,
    "plan": READ_ONLY,
    "apply": RUNS,
}

#: tool -> (spec parameter, spec models its schema allows, description)
SPEC_PARAMETERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "vm_run": (
        "spec",
        ("RunSpec",),
        "A full Run spec document (instead of environment + command), "
        "exactly the YAML document as JSON.",
    ),
    "spec_validate": (
        "spec",
        ("RunSpec", "EnvironmentSpec"),
        "The spec document to check (kind Run or Environment), exactly the YAML as JSON.",
    ),
    "plan": ("spec", ("RunSpec",), "The Run spec document, exactly the YAML as JSON."),
    "apply": ("spec", ("RunSpec",), "The Run spec document, exactly the YAML as JSON."),
}


def tool_functions(sdk: Pyro) -> dict[str, Callable[..., Any]]:
    """Every tool's implementation by name (unwrapped: errors still raise)."""
    functions: dict[str, Callable[..., Any]] = {}
    for group in (VMTools(sdk), SpecTools(sdk), TaskTools(sdk), EnvTools(sdk)):
        for name in ANNOTATIONS:
            method = getattr(group, name, None)
            if method is not None:
                functions[name] = method
    return functions


def make_tool(name: str, function: Callable[..., Any]) -> Tool:
    """An MCP tool from a tool method: schemas from its annotations, description from its
    docstring, spec parameters described by the spec models' checked-in JSON Schema.
    """
    tool = Tool.from_function(
        pyro_tool(function),
        name=name,
        description=inspect.cleandoc(function.__doc__ or ""),
        annotations=ANNOTATIONS[name],
        structured_output=True,
    )
    if name in SPEC_PARAMETERS:
        prop, models, description = SPEC_PARAMETERS[name]
        tool.parameters = embed_spec_schema(tool.parameters, prop, models, description)
    return tool


def build_server(profile: str = DEFAULT_PROFILE, *, sdk: Pyro | None = None) -> MCPServer:
    """The MCP server with the tools of ``profile`` (``vm-run``, ``task-core`` or ``full``).

    Raises:
        UsageError: unknown profile.
    """
    names = tool_names(profile)
    functions = tool_functions(sdk or Pyro())
    tools = [make_tool(name, functions[name]) for name in names]
    return MCPServer(
        name="pyro",
        title="pyro microVMs",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools,
        log_level="WARNING",
    )
