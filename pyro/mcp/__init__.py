"""pyro's MCP server: the only package that imports the ``mcp`` SDK.

* :mod:`pyro.mcp.profiles` — the ``--profile`` names (pure data, no ``mcp``).
* :mod:`pyro.mcp.tool` — ``@tool``: each tool declares its annotations, the profiles that
  offer it (and where) and its spec parameter where it is defined.
* :mod:`pyro.mcp.server` — ``build_server(profile)``: the :class:`MCPServer` and its tools.
* :mod:`pyro.mcp.tools_vm`, :mod:`~pyro.mcp.tools_spec`, :mod:`~pyro.mcp.tools_task`,
  :mod:`~pyro.mcp.tools_env` — the tools: thin async wrappers over :class:`pyro.Pyro`
  whose SDK calls run in worker threads.
* :mod:`pyro.mcp.calls` — threads, cancellation (deletes the call's VMs) and tool errors.
* :mod:`pyro.mcp.schema` — spec arguments described by the spec models' JSON Schema.

Nothing is imported here, so ``import pyro.mcp.profiles`` does not load ``mcp``.
"""
