"""How a tool call runs pyro: in a worker thread, cancellable, with errors as tool results.

The SDK is synchronous and a call can take minutes (a pull, a boot, a long command), so every
call runs in a worker thread and the server's event loop stays free for other calls. A
cancelled call (the client sent ``notifications/cancelled``, or the session ended) deletes
every VM that call created: the worker reports each VM id through
:class:`pyro.sdk.cancel.Cancellation` (the one AsyncPyro uses too) as
soon as the VM exists, and cancelling deletes those VMs, which also ends a command running
in them. A VM reported after the cancel is deleted on the spot.

Errors are tool results: a pyro error, a bug (with its crash log) and arguments that do
not fit the tool's input schema all come back as the CLI's ``error:``/``hint:`` document.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from mcp.types import CallToolResult, TextContent

from pyro.errors import PyroError, SpecError, UsageError
from pyro.mcp.progress import LogLevel, Reporter
from pyro.report.failure import describe
from pyro.sdk.cancel import Cancellation

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context
    from pydantic import ValidationError

    from pyro.sdk import Pyro

P = ParamSpec("P")
T = TypeVar("T")


class ToolGroup:
    """A set of tools over one :class:`pyro.Pyro`, sharing the session's log level."""

    def __init__(self, sdk: Pyro, level: LogLevel | None = None) -> None:
        self.sdk = sdk
        self.level = level or LogLevel()

    def reporter(self, ctx: Context | None) -> Reporter:
        """What tells this call's client how the call goes (:mod:`pyro.mcp.progress`)."""
        return Reporter(ctx, self.level)


async def in_thread(
    work: Callable[[Cancellation], T],
    *,
    undo: Callable[[str], object],
    owned: Callable[[T], Iterable[str]] | None = None,
) -> T:
    """Run ``work`` in a worker thread; on cancellation delete the VMs it created.

    ``owned`` names VMs found in the result (e.g. the one ``create_vm`` returns), for calls
    whose SDK method reports no events; ``undo`` is called for each VM on cancellation.

    Raises:
        Whatever ``work`` raises; the cancellation exception when the call is cancelled.
    """
    token = Cancellation(undo)

    def run() -> T:
        with token.scope():  # cancelling closes the task sessions the call opened
            result = work(token)
        for vm_id in owned(result) if owned is not None else ():
            token.track(vm_id)
        return result

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(token.cancel)
        raise


def error_text(exc: PyroError) -> str:
    """The CLI's two lines (``error:``/``hint:``), plus every located issue of a SpecError."""
    lines = [f"error: {exc.summary}"]
    if isinstance(exc, SpecError) and len(exc.issues) > 1:
        lines.extend(f"  {issue.render()}" for issue in exc.issues)
    if exc.hint:
        lines.append(f"hint: {exc.hint}")
    return "\n".join(lines)


def error_result(exc: Exception) -> CallToolResult:
    """A tool error (``isError``): the text a person reads and, as structured content, the
    CLI's ``--json`` error document. A bug's traceback goes to a crash log, whose path the
    client sees instead (:func:`pyro.report.failure.describe`)."""
    failure = describe(exc)
    text = error_text(exc) if isinstance(exc, PyroError) else failure.text()
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content={"ok": False, "error": failure.document},
        is_error=True,
    )


def argument_error(tool: str, exc: ValidationError) -> UsageError:
    """pyro's usage error for arguments that do not fit a tool's input schema.

    Names each argument and what was expected, in pydantic's words but without its
    documentation links; never echoes the values (they are the caller's data).
    """
    problems = []
    for error in exc.errors(include_url=False):
        # A location can hold a caller's dict key: cut it short (it goes back to them).
        where = (".".join(str(part) for part in error["loc"]) or "arguments")[:80]
        problems.append(f"'{where}': {error['msg'][:1].lower()}{error['msg'][1:]}")
    return UsageError(
        f"{tool}: wrong argument{'s' if len(problems) > 1 else ''}: {'; '.join(problems)}",
        f"give the arguments {tool}'s input schema describes (tools/list)",
    )


def pyro_tool(
    func: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T | CallToolResult]]:
    """Decorate a tool so a :class:`PyroError` comes back as a tool error, and a bug as a
    tool error naming its crash log.

    The wrapper keeps ``func``'s signature (``__wrapped__``), so the tool's input and output
    schemas are still derived from ``func``'s annotations.
    """

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | CallToolResult:
        try:
            return await func(*args, **kwargs)
        except Exception as exc:
            return error_result(exc)

    return wrapper
