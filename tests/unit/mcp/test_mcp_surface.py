"""What a model and its client see of the server, through the SDK's in-memory client: every
field described, the schemas and logs as resources, progress and log messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import LoggingMessageNotificationParams

from pyro.environments.status import ProgressEvent
from pyro.execute.result import RunResult
from pyro.mcp.profiles import PROFILES
from pyro.mcp.resources import SCHEMA_RESOURCES
from pyro.mcp.server import build_server
from pyro.plan.model import Plan
from pyro.sdk import Pyro
from tests.unit.mcp.mcp_fakes import FakePyro

pytestmark = pytest.mark.anyio

SCHEMAS = Path(__file__).parents[3] / "pyro/data/schemas"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakePyro:
    return FakePyro()


def properties(schema: Any, where: str) -> list[tuple[str, Any]]:
    """Every property of ``schema``, nested ones too, with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            found.append((f"{where}/{name}", prop))
        for key, value in schema.items():
            found.extend(properties(value, f"{where}/{key}"))
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found.extend(properties(value, f"{where}[{index}]"))
    return found


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_every_field_is_described_in_plain_words(profile: str) -> None:
    async with Client(build_server(profile, sdk=Pyro())) as client:
        tools = (await client.list_tools()).tools
    listed = json.dumps([tool.model_dump(mode="json", by_alias=True) for tool in tools])
    assert "``" not in listed  # no reStructuredText markup leaks from docstrings
    for tool in tools:
        assert tool.title, tool.name
        found = properties(tool.input_schema, f"{tool.name}:in")
        found += properties(tool.output_schema, f"{tool.name}:out")
        assert found, tool.name
        for where, prop in found:
            words = prop.get("description", "")
            assert len(words) > 3 and words[0] != "`", where


def test_a_result_field_without_words_stops_the_server_from_being_built() -> None:
    from pyro.mcp.schema import brief_output

    schema = {"title": "VMInfo", "properties": {"id": {"type": "string"}, "new": {}}}
    with pytest.raises(ValueError, match=r"VMInfo\.new has no description"):
        brief_output(schema)
    described = {**schema, "properties": {"new": {"type": "string", "description": "``x``"}}}
    assert brief_output(described)["properties"]["new"]["description"] == "`x`"


async def test_output_schemas_accept_real_results(fake: FakePyro) -> None:
    """The brief output schema only loosens: the client validates each result against it."""
    async with Client(build_server("full", sdk=fake)) as client:  # type: ignore[arg-type]
        run = await client.call_tool("vm_run", {"environment": "debian:12", "command": "true"})
        created = await client.call_tool("vm_create", {"environment": "debian:12"})
    assert not run.is_error and not created.is_error
    assert created.structured_content["state"] == "created"  # type: ignore[index]


async def test_annotations_say_what_a_client_may_assume() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        hints: dict[str, Any] = {t.name: t.annotations for t in (await client.list_tools()).tools}
    for name in ("vm_delete", "task_delete", "env_pull", "vm_stop"):
        assert hints[name].idempotent_hint is True, name
    for name in ("vm_run", "vm_exec", "task_exec", "apply"):
        assert not hints[name].idempotent_hint, name
    assert hints["plan"].read_only_hint is True
    assert hints["plan"].open_world_hint is not False  # it may ask a registry
    assert hints["vm_status"].open_world_hint is False


@pytest.mark.parametrize("name", sorted(SCHEMA_RESOURCES))
async def test_schemas_are_resources(name: str) -> None:
    expected = {
        "run": json.loads((SCHEMAS / "run.schema.json").read_text("utf-8")),
        "environment": json.loads((SCHEMAS / "environment.schema.json").read_text("utf-8")),
        "plan": Plan.model_json_schema(by_alias=True),
        "run-result": RunResult.model_json_schema(),
    }[name]
    async with Client(build_server("vm-run", sdk=Pyro())) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        read = await client.read_resource(f"pyro://schemas/{name}")
    assert listed[f"pyro://schemas/{name}"].description
    assert json.loads(read.contents[0].text) == expected  # type: ignore[union-attr]


async def test_unknown_resource_is_a_protocol_error() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource("pyro://schemas/nosuch")
    assert info.value.error.code == -32602 and "pyro://schemas/nosuch" in str(info.value)


async def test_environment_catalog_is_a_resource() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        read = await client.read_resource("pyro://environments")
        listed = await client.call_tool("env_list", {})
    served = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert "debian:12" in [env["name"] for env in served]
    assert served == listed.structured_content["environments"]  # type: ignore[index]


async def test_console_log_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM that never booted has an empty log; unknown and malformed ids get pyro's error."""
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    sdk = Pyro()
    vm = sdk.create_vm("debian:12")
    async with Client(build_server("full", sdk=sdk)) as client:
        templates = (await client.list_resource_templates()).resource_templates
        read = await client.read_resource(f"pyro://vms/{vm.id}/console")
        logs = await client.call_tool("vm_logs", {"vm_id": vm.id})
        with pytest.raises(MCPError) as missing:
            await client.read_resource("pyro://vms/nosuch/console")
        with pytest.raises(MCPError) as odd:
            await client.read_resource("pyro://vms/%2Eodd/console")
        for reaching in ("..%2F..%2Fetc", "..", "a%00b"):  # the SDK's own guard stops these
            with pytest.raises(MCPError) as far:
                await client.read_resource(f"pyro://vms/{reaching}/console")
            assert far.value.error.code == -32602
    sdk.delete_vm(vm.id)
    assert [t.uri_template for t in templates] == ["pyro://vms/{vm_id}/console"]
    assert read.contents[0].text == logs.structured_content["serial"]  # type: ignore[union-attr,index]
    assert "no VM" in str(missing.value) and "hint:" in str(missing.value)
    assert "is no VM id" in str(odd.value)
    assert missing.value.error.code == odd.value.error.code == -32602


async def test_progress_for_each_step_of_a_run(fake: FakePyro) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    async with Client(build_server("vm-run", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "vm_run", {"environment": "debian:12", "command": "true"}, progress_callback=progress
        )
        quiet = await client.call_tool("vm_run", {"environment": "debian:12", "command": "true"})
    assert not result.is_error and not quiet.is_error
    assert seen == [(1, 3, "boot"), (2, 3, "exec.command"), (3, 3, "cleanup")]


async def test_a_pull_inside_a_run_stays_within_its_step(fake: FakePyro) -> None:
    fake.pull_events = [
        ProgressEvent("install", "debian:12"),
        ProgressEvent("download", "debian:12", "rootfs", 100, 100),
        ProgressEvent("build", "debian:12", "a build line"),
        ProgressEvent("ready", "debian:12", "sha256:x"),
    ]
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    async with Client(build_server("vm-run", sdk=fake)) as client:  # type: ignore[arg-type]
        await client.call_tool(
            "vm_run", {"environment": "debian:12", "command": "true"}, progress_callback=progress
        )
    values = [value for value, _, _ in seen]
    assert values == sorted(set(values)) and len(values) == 7
    assert values[0] == 1 and all(1 < value < 2 for value in values[1:5]) and values[5] == 2
    assert {total for _, total, _ in seen} == {3}
    assert seen[2][2] == "download debian:12 rootfs: 100 of 100 bytes"


async def test_progress_of_a_pull_only_grows(fake: FakePyro) -> None:
    events = [
        ProgressEvent("install", "debian:12"),
        ProgressEvent("download", "debian:12", "kernel", 10, 10),
        ProgressEvent("download", "debian:12", "rootfs", 5, 100),
        ProgressEvent("download", "debian:12", "rootfs", 100, 100),
        ProgressEvent("warning", "debian:12", "slow disk"),
        ProgressEvent("ready", "debian:12", "sha256:x"),
    ]

    def pull_environment(environment: str, progress: Any = None) -> Any:
        for event in events:
            progress(event)
        from pyro.environments.status import EnvironmentDetails

        return EnvironmentDetails(name=environment, state="installed")

    fake.pull_environment = pull_environment  # type: ignore[attr-defined]
    seen: list[float] = []
    texts: list[str] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)
        texts.append(message or "")

    async with Client(build_server("full", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "env_pull", {"environment": "debian:12"}, progress_callback=progress
        )
    assert not result.is_error, result.content
    assert seen == sorted(set(seen)) and len(seen) >= 5
    assert seen[-2] >= 110  # the bytes of every blob, added up
    assert texts[0] == "install debian:12" and texts[-1] == "ready debian:12: sha256:x"


# logging/setLevel is what today's (handshake-era) hosts send; the SDK marks it deprecated
# by the 2026-07-28 revision, tested below too.
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_logging_follows_the_level_the_client_sets(fake: FakePyro) -> None:
    messages: list[LoggingMessageNotificationParams] = []

    async def logged(params: LoggingMessageNotificationParams) -> None:
        messages.append(params)

    server = build_server("vm-run", sdk=fake)  # type: ignore[arg-type]
    async with Client(server, mode="legacy", logging_callback=logged) as client:
        assert client.server_capabilities is not None
        assert client.server_capabilities.logging is not None
        await client.call_tool("vm_run", {"environment": "debian:12", "command": "true"})
        by_default = list(messages)
        await client.set_logging_level("debug")
        messages.clear()
        await client.call_tool("vm_run", {"environment": "debian:12", "command": "true"})
        debug = list(messages)
        await client.set_logging_level("error")
        messages.clear()
        await client.call_tool("vm_run", {"environment": "debian:12", "command": "true"})
        error = list(messages)
    assert [m.level for m in by_default] == ["info"] * 3
    assert {m.level for m in debug} == {"info", "debug"}
    assert any("[run] phase=start vm_id=" in str(m.data) for m in debug)
    assert error == []


@pytest.mark.parametrize(("asked", "levels"), [("debug", {"info", "debug"}), (None, set())])
async def test_a_2026_client_asks_for_logs_per_request(
    fake: FakePyro, asked: Any, levels: set[str]
) -> None:
    messages: list[LoggingMessageNotificationParams] = []

    async def logged(params: LoggingMessageNotificationParams) -> None:
        messages.append(params)

    server = build_server("vm-run", sdk=fake)  # type: ignore[arg-type]
    async with Client(server, log_level=asked, logging_callback=logged) as client:
        await client.call_tool("vm_run", {"environment": "debian:12", "command": "true"})
    assert {m.level for m in messages} == levels
