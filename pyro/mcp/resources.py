"""What a client reads instead of finding it inlined in ``tools/list``: MCP resources.

* ``pyro://schemas/{name}``: the JSON Schemas of the spec documents (``run``,
  ``environment``) and of the results whose tool output schemas are brief (``plan``,
  ``run-result``);
* ``pyro://environments``: the environment catalog and cache, as ``env_list`` returns it;
* ``pyro://vms/{vm_id}/console``: a VM's serial console log, as ``vm_logs`` returns it.

Every profile offers them all: the tools' descriptions point at them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from pyro.errors import NotFoundError, PyroError, UsageError
from pyro.execute.result import RunResult
from pyro.mcp.calls import error_text
from pyro.mcp.tools_vm import ID_PATTERN
from pyro.plan.model import Plan
from pyro.sdk import Pyro
from pyro.spec.schema import SCHEMAS, editor_schema

ENVIRONMENTS_URI = "pyro://environments"
CONSOLE_URI = "pyro://vms/{vm_id}/console"
T = TypeVar("T")
#: The tools' rule for a ``vm_id``: ids become host paths, so only plain names pass.
_ID = re.compile(ID_PATTERN)


def _spec_schema(filename: str) -> Callable[[], dict[str, Any]]:
    return lambda: editor_schema(SCHEMAS[filename], filename)


#: ``pyro://schemas/NAME`` -> (what it describes, how to make it).
SCHEMA_RESOURCES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "run": (
        "A Run spec document (the `spec` argument of vm_run, plan, apply).",
        _spec_schema("run.schema.json"),
    ),
    "environment": ("An Environment spec document.", _spec_schema("environment.schema.json")),
    "plan": ("What the plan tool returns.", lambda: Plan.model_json_schema(by_alias=True)),
    "run-result": ("What vm_run and apply return.", RunResult.model_json_schema),
}


def schema_text(name: str) -> str:
    """The JSON text of schema ``name`` (a key of :data:`SCHEMA_RESOURCES`)."""
    return json.dumps(SCHEMA_RESOURCES[name][1](), indent=1, sort_keys=True)


def add_resources(server: MCPServer, sdk: Pyro) -> None:
    """Register pyro's resources on ``server``."""
    for name, (what, _) in SCHEMA_RESOURCES.items():
        server.resource(
            f"pyro://schemas/{name}",
            name=f"{name}-schema",
            title=f"JSON Schema: {name}",
            description=what,
            mime_type="application/schema+json",
        )(_reader(name))

    @server.resource(
        ENVIRONMENTS_URI,
        name="environments",
        title="Environments",
        description="Every environment VMs can run, from the catalog and the cache, with its "
        "state (as env_list returns it).",
        mime_type="application/json",
    )
    async def environments() -> str:
        found = await _call(sdk.list_environments)
        return json.dumps([env.model_dump(mode="json") for env in found], indent=1)

    @server.resource(
        CONSOLE_URI,
        name="vm-console",
        title="VM console log",
        description="A VM's serial console output (as vm_logs returns it): why a guest did "
        "not boot.",
        mime_type="text/plain",
    )
    async def console(vm_id: str) -> str:
        if not _ID.fullmatch(vm_id):
            raise ResourceNotFoundError(
                error_text(UsageError(f"'{vm_id[:80]}' is no VM id", "use an id vm_list shows"))
            )
        return (await _call(lambda: sdk.logs_vm(vm_id))).serial


def _reader(name: str) -> Callable[[], str]:
    def read() -> str:
        return schema_text(name)

    read.__name__ = f"schema_{name.replace('-', '_')}"
    return read


async def _call(work: Callable[[], T]) -> T:
    """``work`` in a worker thread; a pyro error becomes a resource error with its hint
    (an unknown VM the protocol's "invalid params", like an unknown resource)."""
    try:
        return await anyio.to_thread.run_sync(work)
    except NotFoundError as exc:
        raise ResourceNotFoundError(error_text(exc)) from exc
    except PyroError as exc:
        raise ResourceError(error_text(exc)) from exc
