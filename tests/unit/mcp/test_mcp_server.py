"""The MCP server through the SDK's in-memory client: tools, schemas, outputs, errors."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client
from syrupy.assertion import SnapshotAssertion

from pyro.mcp import tool as declare
from pyro.mcp.profiles import PROFILES
from pyro.mcp.server import build_server, declared_tools, tool_names
from pyro.sdk import Pyro
from pyro.spec.model import RunSpec
from pyro.spec.schema import editor_schema
from tests.unit.mcp.mcp_fakes import FakePyro

pytestmark = pytest.mark.anyio

# The MCP form of the Run schema (2020-12, $defs); the checked-in file is the draft-07 one.
RUN_SCHEMA = editor_schema(RunSpec, "run.schema.json")


def run_spec(**body: Any) -> dict[str, Any]:
    spec = {"environment": "debian:12", "steps": [{"name": "hello", "run": "echo hi"}], **body}
    return {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "hello"}, "spec": spec}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakePyro:
    return FakePyro()


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_tool_names_per_profile(profile: str, snapshot: SnapshotAssertion) -> None:
    async with Client(build_server(profile, sdk=Pyro())) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert names == snapshot
    assert names == tool_names(profile)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_place_is_taken_once(profile: str) -> None:
    places = sorted(
        declared.profiles[profile]
        for _, declared in declared_tools().values()
        if profile in declared.profiles
    )
    assert places == list(range(1, len(places) + 1))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_help_says_what_each_profile_offers(profile: str) -> None:
    offers = PROFILES[profile]
    patterns = ["*"] if offers == "everything" else offers.removeprefix("only ").split(", ")
    matching = {name for name in declared_tools() if any(fnmatch(name, p) for p in patterns)}
    assert matching == set(tool_names(profile))


async def test_tool_declarations(snapshot: SnapshotAssertion) -> None:
    """How a client may treat each tool, its title, and where each profile lists it."""
    async with Client(build_server("full", sdk=Pyro())) as client:
        tools = (await client.list_tools()).tools
    declared = declared_tools()
    table = {
        tool.name: {
            "annotations": tool.annotations.model_dump(exclude_none=True)
            if tool.annotations
            else None,
            "profiles": dict(declared[tool.name][1].profiles),
            "title": tool.title,
        }
        for tool in tools
    }
    assert table == snapshot


def test_a_tool_names_only_profiles_that_exist() -> None:
    with pytest.raises(ValueError, match="bad tool profiles"):
        declare.tool(declare.RUNS, title="T", profiles={"everything": 1})
    with pytest.raises(ValueError, match="bad tool profiles"):
        declare.tool(declare.RUNS, title="T", profiles={"full": 0})
    with pytest.raises(ValueError, match="idempotentHint"):
        declare.tool(declare.READ_ONLY, title="T", profiles={"full": 1}, idempotent=True)


async def test_every_tool_has_description_and_schemas() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        tools = (await client.list_tools()).tools
        instructions = client.instructions
    assert instructions is not None and "vm_run" in instructions
    assert len(tools) == 49
    for tool in tools:
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object", tool.name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", tool.name
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
    described = {t.name: t.description or "" for t in tools}
    assert "DELETE" in described["vm_exec"]
    assert "PREFER THIS TOOL" in described["vm_run"]


@pytest.mark.parametrize("name", ["vm_run", "plan", "apply", "spec_validate"])
async def test_spec_parameter_points_at_the_run_schema_resource(name: str) -> None:
    """The spec's schema is not inlined: the argument names the resource that serves it."""
    async with Client(build_server("full", sdk=Pyro())) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == name)
        served = await client.read_resource("pyro://schemas/run")
    spec = tool.input_schema["properties"]["spec"]
    assert "pyro://schemas/run" in spec["description"]
    assert "$defs" not in tool.input_schema
    assert json.loads(served.contents[0].text) == RUN_SCHEMA  # type: ignore[union-attr]
    validator = jsonschema.Draft7Validator(RUN_SCHEMA)
    assert not list(validator.iter_errors(run_spec()))
    assert list(validator.iter_errors(run_spec(steps=[{"name": "hello", "run": 3}])))


async def test_spec_validate_returns_kind_and_name() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        result = await client.call_tool("spec_validate", {"spec": run_spec()})
    assert not result.is_error
    assert result.structured_content == {"valid": True, "kind": "Run", "name": "hello"}


async def test_bad_spec_payload_is_a_tool_error_with_pointer() -> None:
    bad = run_spec(steps=[{"name": "hello", "run": "true", "timeoutSeconds": "soon"}])
    async with Client(build_server("full", sdk=Pyro())) as client:
        for tool in ("spec_validate", "plan", "apply", "vm_run"):
            result = await client.call_tool(tool, {"spec": bad})
            assert result.is_error, tool
            text = result.content[0].text  # type: ignore[union-attr]
            assert "/spec/steps/0/timeoutSeconds" in text
            assert text.startswith("error: ") and "\nhint: " in text
            error = result.structured_content["error"]  # type: ignore[index]
            assert error["type"] == "SpecError"
            assert error["issues"][0]["pointer"] == "/spec/steps/0/timeoutSeconds"


async def test_every_issue_is_listed() -> None:
    bad = run_spec(timeoutSeconds=0, steps=[{"name": "Bad Name", "run": "true"}])
    async with Client(build_server("full", sdk=Pyro())) as client:
        result = await client.call_tool("spec_validate", {"spec": bad})
    pointers = [i["pointer"] for i in result.structured_content["error"]["issues"]]  # type: ignore[index]
    assert {"/spec/timeoutSeconds", "/spec/steps/0/name"} <= set(pointers)
    for pointer in pointers:
        assert pointer in result.content[0].text  # type: ignore[union-attr]


async def test_vars_are_rendered_before_validation() -> None:
    spec = run_spec(steps=[{"name": "hello", "run": "echo {{ vars.WORD }}"}])
    async with Client(build_server("full", sdk=Pyro())) as client:
        missing = await client.call_tool("spec_validate", {"spec": spec})
        given = await client.call_tool("spec_validate", {"spec": spec, "vars": {"WORD": "hi"}})
    assert missing.is_error and "WORD" in missing.content[0].text  # type: ignore[union-attr]
    assert not given.is_error


async def test_plan_returns_the_plan_document() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        result = await client.call_tool("plan", {"spec": run_spec()})
    assert not result.is_error
    plan = result.structured_content
    assert plan is not None and plan["kind"] == "Plan"
    assert plan["digest"].startswith("sha256:")
    actions = [step["action"] for step in plan["steps"]]
    assert actions[-1] == "cleanup" and "exec" in actions


async def test_vm_run_command_form(fake: FakePyro) -> None:
    async with Client(build_server("vm-run", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "vm_run", {"environment": "debian:12", "command": ["uname", "-a"], "vcpus": 2}
        )
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["steps"][0]["stdout"] == "ran ['uname', '-a']"
    assert result.structured_content["stdout"] == "ran ['uname', '-a']"
    assert result.structured_content["exit_code"] == 0
    _, kwargs = fake.calls[0]
    assert kwargs["vcpus"] == 2 and kwargs["timeout_seconds"] == 600 and kwargs["network"] == "off"


async def test_vm_run_spec_form(fake: FakePyro) -> None:
    async with Client(build_server("vm-run", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool("vm_run", {"spec": run_spec()})
    assert not result.is_error
    assert fake.calls[0][0] == "apply"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "vm_run needs environment and command"),
        ({"environment": "debian:12"}, "vm_run needs command"),
        ({"spec": run_spec(), "command": "ls"}, "vm_run got both 'spec' and command"),
        ({"spec": run_spec(), "vcpus": 2}, "vm_run got both 'spec' and vcpus"),
        ({"environment": "debian:12", "command": "ls", "vars": {"A": 1}}, "'vars' only applies"),
    ],
)
async def test_vm_run_needs_exactly_one_form(
    fake: FakePyro, arguments: dict[str, Any], message: str
) -> None:
    async with Client(build_server("vm-run", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool("vm_run", arguments)
    assert result.is_error
    assert message in result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content["error"]["type"] == "UsageError"  # type: ignore[index]
    assert fake.calls == []


async def test_lifecycle_tools_return_models(fake: FakePyro) -> None:
    async with Client(build_server("full", sdk=fake)) as client:  # type: ignore[arg-type]
        created = await client.call_tool("vm_create", {"environment": "debian:12"})
        vm_id = created.structured_content["id"]  # type: ignore[index]
        status = await client.call_tool("vm_status", {"vm_id": vm_id})
        listed = await client.call_tool("vm_list", {})
        started = await client.call_tool("vm_start", {"vm_id": vm_id})
        executed = await client.call_tool("vm_exec", {"vm_id": vm_id, "command": "true"})
        gone = await client.call_tool("vm_status", {"vm_id": vm_id})
        deleted = await client.call_tool("vm_delete", {"vm_id": vm_id})
    assert status.structured_content["state"] == "created"  # type: ignore[index]
    assert [vm["id"] for vm in listed.structured_content["vms"]] == [vm_id]  # type: ignore[index]
    assert started.structured_content["state"] == "running"  # type: ignore[index]
    assert executed.structured_content["deleted"] is True  # type: ignore[index]
    assert gone.is_error and gone.structured_content["error"]["type"] == "NotFoundError"  # type: ignore[index]
    assert deleted.structured_content == {"id": vm_id, "deleted": False}


@pytest.mark.parametrize(
    ("tool", "arguments", "says"),
    [
        ("vm_status", {"vm_id": ["not", "a", "string"]}, "'vm_id': input should be a valid string"),
        ("vm_run", {"environment": "debian:12", "command": "ls", "vcpus": "two"}, "'vcpus'"),
        ("vm_status", {"vm_id": "../../etc"}, "'vm_id': string should match pattern"),
        ("vm_status", {}, "'vm_id': field required"),
    ],
)
async def test_arguments_of_the_wrong_type_get_pyros_error_document(
    fake: FakePyro, tool: str, arguments: dict[str, Any], says: str
) -> None:
    async with Client(build_server("full", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"error: {tool}: wrong argument") and says in text
    assert "\nhint: " in text and "pydantic" not in text and "http" not in text
    error = result.structured_content["error"]  # type: ignore[index]
    assert error["type"] == "UsageError" and "input schema" in error["hint"]
    assert fake.calls == [] and fake.deleted == []


def test_unknown_profile_is_a_usage_error() -> None:
    from pyro.errors import UsageError

    with pytest.raises(UsageError, match="unknown MCP profile 'tiny'") as info:
        build_server("tiny")
    assert "vm-run" in info.value.hint


async def test_a_bug_is_reported_with_a_crash_log(
    fake: FakePyro, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))

    def broken() -> list[Any]:
        raise RuntimeError("boom")

    fake.list_vms = broken  # type: ignore[method-assign]
    async with Client(build_server("full", sdk=fake)) as client:  # type: ignore[arg-type]
        result = await client.call_tool("vm_list", {})
    assert result.is_error
    error = result.structured_content["error"]  # type: ignore[index]
    assert error["type"] == "InternalError" and "RuntimeError: boom" in error["message"]
    logs = list((tmp_path / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in error["hint"]
    assert "Traceback" not in result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" in logs[0].read_text()


async def test_env_list_and_unknown_env_pull() -> None:
    async with Client(build_server("full", sdk=Pyro())) as client:
        listed = await client.call_tool("env_list", {})
        missing = await client.call_tool("env_pull", {"environment": "nosuch:1"})
    assert not listed.is_error
    names = [env["name"] for env in listed.structured_content["environments"]]  # type: ignore[index]
    assert "debian:12" in names
    assert missing.is_error
    error = missing.structured_content["error"]  # type: ignore[index]
    assert error["type"] == "EnvironmentNotFoundError" and "env list" in error["hint"]
