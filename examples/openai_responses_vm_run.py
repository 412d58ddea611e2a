"""An OpenAI Responses API tool loop that lets the model run commands in pyro microVMs.

    export OPENAI_API_KEY=...
    python examples/openai_responses_vm_run.py "Which git version does debian:12 ship?"

The model gets one tool, ``vm_run``: each call runs in a fresh VM that is deleted afterwards,
so nothing the model runs touches this machine or leaks into the next call. The loop sends
the tool's result back and stops when the model answers in text. ``OPENAI_BASE_URL`` and
``OPENAI_MODEL`` pick another endpoint or model.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from openai import OpenAI
from openai.types.responses import FunctionToolParam

from pyro import Pyro
from pyro.errors import PyroError

VM_RUN_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "vm_run",
    "description": (
        "Run a shell command in a fresh, isolated Linux microVM and return its exit code, "
        "stdout and stderr. The VM is deleted afterwards; nothing persists between calls."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "environment": {
                "type": "string",
                "description": "Environment name, e.g. 'debian:12'.",
            },
            "command": {"type": "string", "description": "Shell command line (sh -c)."},
            "timeout_seconds": {
                "type": "integer",
                "description": "Limit for the whole run, boot included.",
            },
        },
        "required": ["environment", "command", "timeout_seconds"],
        "additionalProperties": False,
    },
    "strict": True,
}
MAX_TURNS = 8


def vm_run(pyro: Pyro, arguments: dict[str, Any]) -> dict[str, Any]:
    """Carry out one ``vm_run`` call; what goes back to the model (errors included)."""
    try:
        result = pyro.run_in_vm(
            arguments["environment"],
            arguments["command"],
            timeout_seconds=int(arguments.get("timeout_seconds") or 300),
        )
    except PyroError as exc:
        return {"ok": False, "error": exc.to_dict()}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": {"type": "UsageError", "message": f"bad arguments: {exc}"}}
    return {
        "ok": result.ok,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error": result.error,
    }


def run_agent(client: OpenAI, prompt: str, *, model: str, pyro: Pyro | None = None) -> str:
    """Ask ``model``; run every ``vm_run`` call it makes; return its final text."""
    pyro = pyro or Pyro()
    conversation: list[Any] = [{"role": "user", "content": prompt}]
    for _ in range(MAX_TURNS):
        response = client.responses.create(model=model, input=conversation, tools=[VM_RUN_TOOL])
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return response.output_text
        conversation.extend(response.output)
        for call in calls:
            if call.name == "vm_run":
                output = vm_run(pyro, json.loads(call.arguments))
            else:
                output = {"ok": False, "error": {"message": f"unknown tool {call.name}"}}
            print(f"[vm_run] {call.arguments} exit_code={output.get('exit_code')}", file=sys.stderr)
            reply = {"type": "function_call_output", "call_id": call.call_id}
            conversation.append({**reply, "output": json.dumps(output)})
    return "(stopped: the model kept calling tools)"


def main(argv: list[str]) -> int:
    prompt = " ".join(argv) or "Which git version does the debian:12 environment ship?"
    client = OpenAI()  # OPENAI_API_KEY, OPENAI_BASE_URL from the environment
    print(run_agent(client, prompt, model=os.environ.get("OPENAI_MODEL", "gpt-5")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
