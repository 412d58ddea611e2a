"""``vm_run`` as a LangChain tool: a thin adapter over the SDK, nothing more.

    pip install langchain-openai
    python examples/langchain_vm_run.py "Which kernel does debian:12 run?"

Framework wrappers stay thin on purpose: the tool's whole job is to call ``run_in_vm`` and
hand back exit code and output, so the VM is always deleted after each call. ``run_agent``
is a minimal tool-calling loop that works with any chat model supporting ``bind_tools``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from pyro import Pyro
from pyro.errors import PyroError

MAX_TURNS = 8


@tool
def vm_run(environment: str, command: str, timeout_seconds: int = 300) -> str:
    """Run a shell command in a fresh, isolated Linux microVM (deleted afterwards).

    Args:
        environment: Environment name, e.g. 'debian:12'.
        command: Shell command line, run with 'sh -c'.
        timeout_seconds: Limit for the whole run, boot included.
    """
    try:
        result = Pyro().run_in_vm(environment, command, timeout_seconds=timeout_seconds)
    except PyroError as exc:
        return json.dumps({"ok": False, "error": exc.to_dict()})
    return json.dumps(
        {
            "ok": result.ok,
            "exit_code": result.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
        }
    )


def run_agent(model: Any, prompt: str) -> tuple[str, list[BaseMessage]]:
    """Run the model with ``vm_run`` until it answers in text; returns (answer, messages)."""
    try:
        bound = model.bind_tools([vm_run])
    except NotImplementedError:  # a model that cannot be told about tools (e.g. a test fake)
        bound = model
    messages: list[BaseMessage] = [HumanMessage(prompt)]
    for _ in range(MAX_TURNS):
        reply = bound.invoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            return str(reply.content), messages
        for call in reply.tool_calls:
            if call["name"] == "vm_run":
                messages.append(vm_run.invoke(call))
            else:
                unknown = f"unknown tool {call['name']}"
                messages.append(ToolMessage(unknown, tool_call_id=call["id"]))
    return "(stopped: the model kept calling tools)", messages


def main(argv: list[str]) -> int:
    try:
        from langchain_openai import ChatOpenAI  # type: ignore[import-not-found]
    except ImportError:
        print("this example needs a chat model: pip install langchain-openai", file=sys.stderr)
        return 1
    model: BaseChatModel = ChatOpenAI(model="gpt-5")
    answer, _ = run_agent(model, " ".join(argv) or "Which kernel does debian:12 run?")
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
