"""Every example in examples/ runs: the Python ones on real guests, the configs parse."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"


def run_example(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        # The checkout first on the path, as for `python -m`: the example must import this
        # pyro, whatever an (editable) install in the environment maps it to.
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- SDK examples on real guests -------------------------------------------------------------


@pytest.mark.guest
def test_python_run(guest_install: Any, pyro_state: Path) -> None:
    proc = run_example("python_run.py")
    assert proc.returncode == 0, proc.stderr
    assert "Linux " in proc.stdout and "git version 2." in proc.stdout
    assert "exit_code=0 backend=" in proc.stdout


@pytest.mark.guest
def test_python_lifecycle_shows_exec_vm_deletes_the_vm(
    guest_install: Any, pyro_state: Path
) -> None:
    proc = run_example("python_lifecycle.py")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("created ") and lines[0].endswith("state=created")
    assert "state=running" in lines[1]
    assert lines[2].startswith('PRETTY_NAME="Debian GNU/Linux 12')
    assert lines[-1].endswith("is gone: exec_vm deleted it")


@pytest.mark.guest
def test_python_task_keeps_state(guest_install: Any, pyro_state: Path) -> None:
    proc = run_example("python_task.py")
    assert proc.returncode == 0, proc.stderr
    assert "second: exit_code=0 stdout='state survives'" in proc.stdout
    assert "journal: 2 commands" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("deleted ")


@pytest.mark.guest
def test_agent_session_reaches_a_service_from_the_host(
    guest_install: Any, pyro_state: Path
) -> None:
    """Shell + service + published port: the host fetches the page the shell wrote, then
    the edited one; the task (and its shell and service) is gone at the end."""
    proc = run_example("agent_session.py")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "shell dev open, service web running (pid " in lines[0]
    assert lines[1] == "host GET 127.0.0.1 (published) -> 200 hello from the task"
    assert lines[2] == "after an edit in the shell -> 200 edited in the shell"
    assert lines[3].startswith("service log: 3 requests")
    assert lines[-1].startswith("deleted ")
    from pyro.machines.registry import VMRegistry

    assert VMRegistry(pyro_state).list() == []


# -- OpenAI Responses API loop against a local fake endpoint ---------------------------------


class FakeResponses(BaseHTTPRequestHandler):
    """``POST /v1/responses``: first a ``vm_run`` function call, then a final message that
    quotes the tool output it was sent, so the test sees the whole loop."""

    requests: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "body": body})
        outputs = [i for i in body["input"] if i.get("type") == "function_call_output"]
        if not outputs:
            arguments = {
                "environment": "debian:12",
                "command": "echo pyro-$((6 * 7)); uname -s",
                "timeout_seconds": 300,
            }
            output: list[dict[str, Any]] = [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "vm_run",
                    "arguments": json.dumps(arguments),
                    "status": "completed",
                }
            ]
        else:
            result = json.loads(outputs[-1]["output"])
            said = str(result.get("stdout", result.get("error"))).strip()
            text = f"The VM said: {said} (exit {result.get('exit_code')})"
            output = [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
        reply = {
            "id": f"resp_{len(self.requests)}",
            "object": "response",
            "created_at": 0,
            "model": body["model"],
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools", []),
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (FakeResponses,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.guest
def test_openai_responses_loop_runs_the_command_in_a_guest(
    guest_install: Any, pyro_state: Path, fake_openai: tuple[str, list[dict[str, Any]]]
) -> None:
    base_url, requests = fake_openai
    env = {
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": "fake-model",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    proc = run_example("openai_responses_vm_run.py", "What is six times seven?", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "The VM said: pyro-42\nLinux (exit 0)"
    assert [r["path"] for r in requests] == ["/v1/responses", "/v1/responses"]
    first, second = (r["body"] for r in requests)
    assert first["model"] == "fake-model"
    assert [tool["name"] for tool in first["tools"]] == ["vm_run"]
    assert first["input"] == [{"role": "user", "content": "What is six times seven?"}]
    sent = json.loads(second["input"][-1]["output"])
    assert second["input"][-1]["call_id"] == "call_1"
    assert (sent["ok"], sent["exit_code"], sent["stdout"]) == (True, 0, "pyro-42\nLinux\n")


# -- LangChain adapter with langchain-core's fake chat model ---------------------------------


@pytest.mark.guest
def test_langchain_tool_runs_in_a_guest(guest_install: Any, pyro_state: Path) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, ToolMessage

    example = load_example("langchain_vm_run.py")
    call = {"name": "vm_run", "args": {"environment": "debian:12", "command": "echo lc-$((6*7))"}}
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(content="", tool_calls=[{**call, "id": "call_1", "type": "tool_call"}]),
                AIMessage(content="done"),
            ]
        )
    )
    answer, messages = example.run_agent(model, "run it")
    assert answer == "done"
    tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1 and tool_messages[0].tool_call_id == "call_1"
    result = json.loads(str(tool_messages[0].content))
    assert (result["ok"], result["exit_code"], result["stdout"]) == (True, 0, "lc-42\n")


def test_langchain_tool_schema() -> None:
    example = load_example("langchain_vm_run.py")
    schema = example.vm_run.args
    assert set(schema) == {"environment", "command", "timeout_seconds"}
    assert "microVM" in example.vm_run.description


# -- configuration examples -----------------------------------------------------------------


@pytest.mark.guest
def test_mcp_client_snippet_in_the_config_doc_runs(guest_install: Any, pyro_state: Path) -> None:
    text = (EXAMPLES / "mcp_client_config.md").read_text("utf-8")
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    bin_dir = str(Path(sys.executable).parent)  # where the `pyro` script is installed
    proc = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0 git version 2."), proc.stdout
    assert "exec.command" in proc.stderr  # the snippet's progress callback saw the exec step


@pytest.mark.parametrize("name", ["claude_desktop_mcp_config.json", "cursor_mcp_config.json"])
def test_mcp_host_configs_point_at_pyro_mcp_serve(name: str) -> None:
    config = json.loads((EXAMPLES / name).read_text("utf-8"))
    server = config["mcpServers"]["pyro"]
    assert server["command"] == "pyro"
    assert server["args"][:2] == ["mcp", "serve"]
    from pyro.mcp.profiles import PROFILES

    if "--profile" in server["args"]:
        assert server["args"][server["args"].index("--profile") + 1] in PROFILES


def test_mcp_client_config_doc_names_every_profile_and_config() -> None:
    text = (EXAMPLES / "mcp_client_config.md").read_text("utf-8")
    from pyro.mcp.profiles import PROFILES

    for profile in PROFILES:
        assert f"`{profile}`" in text
    for name in (
        "claude_desktop_mcp_config.json",
        "cursor_mcp_config.json",
        "claude_code_mcp.json",
        "codex_config.toml",
        "opencode.json",
    ):
        assert name in text
