"""A hostile MCP caller reaching for host files outside the server's root, through the real
MCP SDK client and the real :class:`pyro.Pyro` (every refusal happens while planning: no guest).

The layout: the server runs in ``tmp/`` (its working directory) with
``PYRO_MCP_ROOT=tmp/root``; ``tmp/secret.txt``, a shadow-like ``tmp/shadow`` and
``tmp/creds.yaml`` hold a random token that must never come back to the caller; ``root/``
holds links that leave it. Environments are unknown names (or the path under test), so even
code that let a path through would plan no build and boot nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import Client

from pyro.mcp.server import build_server
from pyro.sdk import Pyro

pytestmark = [pytest.mark.anyio, pytest.mark.hostile]

TOKEN = "s3cr3t-" + secrets.token_hex(8)
ENVIRONMENT_SPEC = """\
apiVersion: pyro/v1
kind: Environment
metadata: {name: "mine:1"}
spec:
  version: 1.0.0
  kernel: {package: linux-source-6.1, fragment: FRAGMENT}
  rootfs: {distribution: debian, suite: bookworm, variant: minbase, packages: [], sizeMiB: 512}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's working directory; its ``root/`` is PYRO_MCP_ROOT."""
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    root = tmp_path / "root"
    (root / "envs").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text(f"{TOKEN}\n")
    (tmp_path / "shadow").write_text(f"root:$6${TOKEN}$x:19000:0:99999:7:::\nbin:*:19000::::::\n")
    (tmp_path / "creds.yaml").write_text(f"apiVersion: {TOKEN}\n")  # old code echoed it
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "key").write_text(f"{TOKEN}\n")
    (root / "ok.txt").write_text("fine\n")
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "away").symlink_to(tmp_path / "outside")
    (root / "env.yaml").symlink_to(tmp_path / "shadow")
    (root / "envs" / "frag.config").symlink_to(tmp_path / "secret.txt")
    (root / "envs" / "leaky.yaml").write_text(ENVIRONMENT_SPEC.replace("FRAGMENT", "frag.config"))
    (root / "envs" / "local.config").write_text("CONFIG_X=y\n")
    (root / "envs" / "mine.yaml").write_text(ENVIRONMENT_SPEC.replace("FRAGMENT", "local.config"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_MCP_ROOT", str(root))
    return tmp_path


def run_spec(environment: str = "nosuch:1", **body: Any) -> dict[str, Any]:
    spec = {"environment": environment, "steps": [{"name": "s", "run": "true"}], **body}
    return {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "reach"}, "spec": spec}


def seen(result: types.CallToolResult) -> str:
    """Everything the caller gets back."""
    text = "".join(getattr(block, "text", "") for block in result.content)
    return text + json.dumps(result.structured_content)


def error_type(result: types.CallToolResult) -> str | None:
    structured = result.structured_content or {}
    return structured.get("error", {}).get("type") if result.is_error else None


async def call(tool: str, arguments: dict[str, Any], **client: Any) -> types.CallToolResult:
    async with Client(build_server("full", sdk=Pyro()), **client) as session:
        return await session.call_tool(tool, arguments)


def roots_callback(*folders: Path | str) -> Any:
    async def answer(context: Any) -> types.ListRootsResult:
        uris = [f if isinstance(f, str) else f.as_uri() for f in folders]
        return types.ListRootsResult(roots=[types.Root(uri=uri) for uri in uris])  # type: ignore[arg-type]

    return answer


SPEC_TOOLS = [("plan", "spec"), ("apply", "spec"), ("vm_run", "spec")]


@pytest.mark.parametrize(("tool", "arg"), SPEC_TOOLS)
@pytest.mark.parametrize(
    ("source", "refused_as"),
    [
        ("secret.txt", "UsageError"),  # the server's cwd holds it; the root does not
        ("leak.txt", "OutsideRootError"),  # a symlink to it
        ("away/key", "OutsideRootError"),  # through a symlinked folder
        ("away", "OutsideRootError"),
        ("../secret.txt", "SpecError"),  # refused by the spec model already
        ("/etc/shadow", "SpecError"),
    ],
)
async def test_files_outside_the_root_are_refused_before_boot(
    host: Path, tool: str, arg: str, source: str, refused_as: str
) -> None:
    spec = run_spec(files=[{"source": source, "target": "/tmp/x"}])
    result = await call(tool, {arg: spec})
    assert error_type(result) == refused_as, seen(result)
    assert TOKEN not in seen(result)
    assert not list((host / "state").glob("vms/*"))


ENV_CALLS = [
    ("plan", lambda env: {"spec": run_spec(env)}),
    ("apply", lambda env: {"spec": run_spec(env)}),
    ("vm_run", lambda env: {"spec": run_spec(env)}),
    ("vm_run", lambda env: {"environment": env, "command": "true"}),
    ("vm_create", lambda env: {"environment": env}),
    ("task_create", lambda env: {"environment": env}),
    ("env_pull", lambda env: {"environment": env}),
]


@pytest.mark.parametrize(
    ("tool", "arguments"), ENV_CALLS, ids=lambda v: v if isinstance(v, str) else ""
)
@pytest.mark.parametrize(
    "environment", ["{host}/shadow", "{host}/creds.yaml", "../shadow", "env.yaml"]
)
async def test_environment_paths_outside_the_root_are_never_read(
    host: Path, tool: str, arguments: Any, environment: str
) -> None:
    result = await call(tool, arguments(environment.format(host=host)))
    assert error_type(result) == "OutsideRootError", seen(result)
    assert "environment" in seen(result) and str(host / "root") in seen(result)
    assert TOKEN not in seen(result) and "bin:*" not in seen(result)


@pytest.mark.parametrize("tool", ["plan", "vm_run", "vm_create", "env_pull"])
async def test_a_kernel_fragment_leaving_the_root_is_refused(host: Path, tool: str) -> None:
    arguments = dict(ENV_CALLS)[tool]("envs/leaky.yaml")
    result = await call(tool, arguments)
    assert error_type(result) == "OutsideRootError", seen(result)
    assert "kernel.fragment" in seen(result) and TOKEN not in seen(result)


async def test_relative_paths_start_at_the_root_not_the_working_directory(host: Path) -> None:
    spec = run_spec("envs/mine.yaml", files=[{"source": "ok.txt", "target": "/tmp/ok"}])
    result = await call("plan", {"spec": spec})
    assert not result.is_error, seen(result)
    plan = result.structured_content or {}
    assert plan["environment"]["name"] == "mine:1"
    assert any(step["action"] == "copy-in" for step in plan["steps"])


@pytest.mark.parametrize("seed", ["..", "/etc", "away", "{host}/outside", "../outside"])
async def test_seed_paths_outside_the_root_are_refused(host: Path, seed: str) -> None:
    arguments = {"environment": "nosuch:1", "seed_path": seed.format(host=host)}
    result = await call("task_create", arguments)
    assert error_type(result) == "OutsideRootError", seen(result)
    assert "seed_path" in seen(result) and TOKEN not in seen(result)


# -- roots declared by the client ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 input_required, and roots/list
async def test_the_clients_roots_are_the_folders(
    host: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.delenv("PYRO_MCP_ROOT")  # the working directory (host) would hold secret.txt
    declared = host / "root" / "envs"
    client = {"list_roots_callback": roots_callback(declared), "mode": mode}
    outside = await call("plan", {"spec": run_spec("../env.yaml")}, **client)
    assert error_type(outside) == "OutsideRootError", seen(outside)
    assert str(declared) in seen(outside) and "roots your MCP client declared" in seen(outside)
    escaping = await call("plan", {"spec": run_spec("leaky.yaml")}, **client)
    assert error_type(escaping) == "OutsideRootError", seen(escaping)
    secret = run_spec(files=[{"source": "secret.txt", "target": "/tmp/x"}])
    assert error_type(await call("plan", {"spec": secret}, **client)) == "UsageError"
    inside = await call("plan", {"spec": run_spec("mine.yaml")}, **client)
    assert not inside.is_error, seen(inside)
    assert (inside.structured_content or {})["environment"]["name"] == "mine:1"


async def test_the_clients_roots_stay_within_the_servers_root(host: Path) -> None:
    spec = run_spec("envs/mine.yaml", files=[{"source": "ok.txt", "target": "/tmp/ok"}])
    above = await call("plan", {"spec": spec}, list_roots_callback=roots_callback(host))
    assert not above.is_error, seen(above)  # narrowed to PYRO_MCP_ROOT: paths start there
    secret = run_spec(files=[{"source": "../secret.txt", "target": "/tmp/x"}])
    assert error_type(await call("plan", {"spec": secret})) == "SpecError"
    beside = roots_callback(host / "outside", "file://elsewhere/srv", "file:///no/such/folder")
    refused = await call("plan", {"spec": spec}, list_roots_callback=beside)
    assert error_type(refused) == "OutsideRootError", seen(refused)
    assert "no host folder is open" in seen(refused)


async def test_without_declared_roots_the_folder_is_the_server_root(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyro.mcp.roots import mcp_root

    assert mcp_root().folders == (host / "root",)
    monkeypatch.delenv("PYRO_MCP_ROOT")
    assert mcp_root().folders == (host,)
    monkeypatch.chdir("/")  # where some MCP hosts start servers: that opens nothing
    assert mcp_root().folders == ()
    refused = await call("plan", {"spec": run_spec("/etc/passwd")})
    assert error_type(refused) == "OutsideRootError" and "PYRO_MCP_ROOT" in seen(refused)


async def test_a_root_that_is_no_folder_is_a_clear_error(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_MCP_ROOT", str(host / "secret.txt"))
    result = await call("plan", {"spec": run_spec("envs/mine.yaml")})
    assert error_type(result) == "UsageError"
    assert "PYRO_MCP_ROOT" in seen(result) and "not an existing folder" in seen(result)


async def test_a_tool_without_host_paths_works_with_no_folder_open(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYRO_MCP_ROOT")
    monkeypatch.chdir("/")
    result = await call("plan", {"spec": run_spec("debian:12")})
    assert not result.is_error, seen(result)
    assert os.getcwd() == "/"


@pytest.mark.parametrize(
    ("tool", "arg"),
    [
        ("vm_delete", "vm_id"),
        ("vm_status", "vm_id"),
        ("vm_logs", "vm_id"),
        ("task_delete", "task_id"),
        ("task_status", "task_id"),
        ("task_logs", "task_id"),
    ],
)
@pytest.mark.parametrize("bad_id", ["x/../../../victim/poetry", "../x", ".hidden", "a\x00b", ""])
async def test_ids_that_could_become_host_paths_are_refused(
    host: Path, tool: str, arg: str, bad_id: str
) -> None:
    """Ids name records and lock files in the state folder: only plain names reach it."""
    victim = host / "victim" / "poetry.lock"
    victim.parent.mkdir()
    victim.write_text("keep\n")
    result = await call(tool, {arg: bad_id})
    assert result.is_error, seen(result)
    assert victim.read_text() == "keep\n"


@pytest.mark.parametrize("via", ["spec", "fragment", "link"])
async def test_guest_output_never_becomes_an_environment_the_host_builds(
    host: Path, via: str
) -> None:
    """Artifacts are inside the root, but a guest wrote them: an Environment (whose kernel
    configuration could embed host files, e.g. CONFIG_INITRAMFS_SOURCE) is not built from them."""
    root = host / "root"
    planted = root / ".pyro-artifacts" / "plant-20250101-000000-abcdef"
    planted.mkdir(parents=True)
    (planted / "evil.config").write_text('CONFIG_INITRAMFS_SOURCE="/root/.ssh"\n')
    (planted / "env.yaml").write_text(ENVIRONMENT_SPEC.replace("FRAGMENT", "evil.config"))
    (root / "envs" / "evil.config").symlink_to(planted / "evil.config")
    (root / "envs" / "uses.yaml").write_text(ENVIRONMENT_SPEC.replace("FRAGMENT", "evil.config"))
    (root / "envs" / "link.yaml").symlink_to(planted / "env.yaml")
    environment = {
        "spec": ".pyro-artifacts/plant-20250101-000000-abcdef/env.yaml",
        "fragment": "envs/uses.yaml",
        "link": "envs/link.yaml",
    }[via]
    for tool, arguments in [
        ("plan", {"spec": run_spec(environment)}),
        ("env_pull", {"environment": environment}),
    ]:
        result = await call(tool, arguments)
        assert error_type(result) == "OutsideRootError", seen(result)
        assert "guest output" in seen(result)


@pytest.mark.parametrize("uri", ["file:///", "file://localhost/%2e%2e/", "LINK"])
async def test_a_declared_root_of_slash_opens_nothing(
    host: Path, monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    # The old code took a client's file:/// as the root: the whole host was "inside" it,
    # although / was refused as the working-directory default.
    monkeypatch.delenv("PYRO_MCP_ROOT")
    monkeypatch.chdir("/")  # like Claude Desktop
    if uri == "LINK":
        (host / "slash").symlink_to("/")
        uri = (host / "slash").as_uri()
    secret = str(host / "secret.txt").lstrip("/")  # relative to /
    for spec in (run_spec(files=[{"source": secret, "target": "/x"}]), run_spec(secret)):
        refused = await call("plan", {"spec": spec}, list_roots_callback=roots_callback(uri))
        assert error_type(refused) == "OutsideRootError", seen(refused)
        assert TOKEN not in seen(refused)
        assert "it declared / (the whole host)" in seen(refused)
        assert "client's configuration" in seen(refused)


async def test_a_declared_slash_is_dropped_and_the_other_roots_stay(
    host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp.types import ListRootsResult
    from mcp.types import Root as McpRoot

    from pyro.mcp.roots import mcp_root

    monkeypatch.delenv("PYRO_MCP_ROOT")
    declared = ListRootsResult(roots=[McpRoot(uri="file:///"), McpRoot(uri=host.as_uri())])  # type: ignore[arg-type]
    assert mcp_root(declared).folders == (host,)
    # With PYRO_MCP_ROOT, / is a root above it like any other: narrowed to it.
    monkeypatch.setenv("PYRO_MCP_ROOT", str(host / "root"))
    only_slash = ListRootsResult(roots=[McpRoot(uri="file:///")])  # type: ignore[arg-type]
    assert mcp_root(only_slash).folders == (host / "root",)
