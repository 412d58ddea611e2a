"""pyro's MCP server: the only package that imports the ``mcp`` SDK.

* :mod:`pyro.mcp.profiles` — the ``--profile`` names (pure data, no ``mcp``).
* :mod:`pyro.mcp.tool` — ``@tool``: each tool declares its title, annotations and the
  profiles that offer it (and where) where it is defined.
* :mod:`pyro.mcp.server` — ``build_server(profile)``: the :class:`MCPServer` and its tools.
* :mod:`pyro.mcp.tools_vm`, :mod:`~pyro.mcp.tools_spec`, :mod:`~pyro.mcp.tools_task`,
  :mod:`~pyro.mcp.tools_env` — the tools: thin async wrappers over :class:`pyro.Pyro`
  whose SDK calls run in worker threads.
* :mod:`pyro.mcp.calls` — threads, cancellation (deletes the call's VMs) and tool errors.
* :mod:`pyro.mcp.schema` — the brief schemas ``tools/list`` shows, with words from
  :mod:`pyro.mcp.glossary`.
* :mod:`pyro.mcp.resources` — the schemas, the environment catalog and console logs.
* :mod:`pyro.mcp.progress` — progress notifications and log messages of a call.

Nothing is imported here, so ``import pyro.mcp.profiles`` does not load ``mcp``.
"""
