"""The pyro MCP server: one :class:`MCPServer` whose tools are chosen by a profile."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, SetLevelRequestParams
from pydantic import ValidationError

from pyro.__about__ import __version__
from pyro.mcp.calls import argument_error, error_result, pyro_tool
from pyro.mcp.profiles import DEFAULT_PROFILE, check_profile
from pyro.mcp.progress import LogLevel
from pyro.mcp.resources import add_resources
from pyro.mcp.schema import brief_input, brief_output, plain_words
from pyro.mcp.tool import Declaration, declaration
from pyro.mcp.tools_env import EnvTools
from pyro.mcp.tools_procs import ProcessTools
from pyro.mcp.tools_spec import SpecTools
from pyro.mcp.tools_task import TaskTools
from pyro.mcp.tools_task_state import TaskStateTools
from pyro.mcp.tools_vm import VMTools
from pyro.mcp.tools_workspace import WorkspaceTools
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
Resources: the spec's JSON Schema (pyro://schemas/run), the environments
(pyro://environments) and a VM's console log (pyro://vms/{vm_id}/console).
Errors come back as tool errors with a hint, and for specs the JSON pointer of the problem.
Host paths (a spec's files[].source, an environment given as a path, seed_path,
task_sync_push's source, task_export's output) must be inside the server's root folder
(your declared roots, else PYRO_MCP_ROOT or the server's working directory); relative ones
start there. Artifacts and exports are copied into a new folder under .pyro-artifacts/
there, named by artifacts_dir (dest for an export) in the result. While vm_run or
task_exec runs, its output arrives as log messages (logger pyro.stdout, pyro.stderr).
"""

#: The classes whose :func:`~pyro.mcp.tool.tool` methods are the tools.
TOOL_CLASSES = (
    VMTools,
    SpecTools,
    TaskTools,
    TaskStateTools,
    EnvTools,
    WorkspaceTools,
    ProcessTools,
)


def declared_tools() -> dict[str, tuple[type, Declaration]]:
    """Every tool by name: the class that defines it and what it declared.

    Raises:
        ValueError: two tools with one name (a bug in pyro).
    """
    found: dict[str, tuple[type, Declaration]] = {}
    for cls in TOOL_CLASSES:
        for name, member in vars(cls).items():
            declared = declaration(member)
            if declared is None:
                continue
            if name in found:
                raise ValueError(f"two tools are named {name}")
            found[name] = (cls, declared)
    return found


def tool_names(profile: str) -> list[str]:
    """The tools ``profile`` offers, in the order it lists them.

    Raises:
        UsageError: unknown profile.
        ValueError: two tools declared the same place in it (a bug in pyro).
    """
    check_profile(profile)
    places = {
        name: declared.profiles[profile]
        for name, (_, declared) in declared_tools().items()
        if profile in declared.profiles
    }
    if len(set(places.values())) != len(places):
        raise ValueError(f"two tools of profile {profile} declare the same place: {places}")
    return sorted(places, key=places.__getitem__)


class PyroTool(Tool):
    """An MCP tool whose wrong arguments get pyro's error document, like any other failure.

    The SDK checks arguments before the tool's own code runs and reports pydantic's text;
    this checks them first and answers with a :class:`~pyro.errors.UsageError`.
    """

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> Any:
        try:
            self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            result: CallToolResult = error_result(argument_error(self.name, exc))
            return result
        return await super().run(arguments, context, convert_result)


def make_tool(name: str, function: Callable[..., Any], declared: Declaration) -> Tool:
    """An MCP tool from a tool method: schemas from its annotations (in their brief form,
    :mod:`pyro.mcp.schema`), description from its docstring.
    """
    tool = PyroTool.from_function(
        pyro_tool(function),
        name=name,
        title=declared.title,
        description=plain_words(inspect.cleandoc(function.__doc__ or "")),
        annotations=declared.annotations,
        structured_output=True,
    )
    tool.parameters = brief_input(tool.parameters)
    full = tool.fn_metadata.output_schema
    if full is not None:
        tool.fn_metadata.output_schema = brief_output(full)
    return tool


def build_server(profile: str = DEFAULT_PROFILE, *, sdk: Pyro | None = None) -> MCPServer:
    """The MCP server with the tools of ``profile`` (:data:`pyro.mcp.profiles.PROFILES`),
    pyro's resources, and ``logging/setLevel``.

    Raises:
        UsageError: unknown profile.
    """
    names = tool_names(profile)
    sdk = sdk or Pyro()
    level = LogLevel()
    groups: dict[type, object] = {cls: cls(sdk, level) for cls in TOOL_CLASSES}
    declared = declared_tools()
    tools = []
    for name in names:
        cls, what = declared[name]
        tools.append(make_tool(name, getattr(groups[cls], name), what))
    server: MCPServer = MCPServer(
        name="pyro",
        title="pyro microVMs",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools,
        log_level="WARNING",
    )
    add_resources(server, sdk)
    # MCPServer takes no setLevel handler; the SDK's docs point at the low-level server's
    # add_request_handler for it (the capability is then advertised).
    server._lowlevel_server.add_request_handler(
        "logging/setLevel", SetLevelRequestParams, level.set_level
    )
    return server
