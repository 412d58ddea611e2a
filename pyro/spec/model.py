"""Pydantic models of pyro's spec documents (contract §1).

Pure: no I/O. Every model forbids unknown keys and is immutable. Field names are the
camelCase keys users write in YAML; Python attribute names are snake_case.
"""

import posixpath
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from pyro.spec import limits
from pyro.spec.gitmeta import has_git_part
from pyro.spec.ref import (
    ENVIRONMENT_SCHEMA_PATTERN,
    EnvironmentRef,
    parse_environment_ref,
)

API_VERSION = "pyro/v1"

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
ENV_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}(:[a-z0-9][a-z0-9._-]{0,62})?$"
STEP_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

MAX_TIMEOUT_S = limits.TIMEOUT_SECONDS[1]
MAX_ARTIFACTS = 256


class Model(BaseModel):
    """Base of every spec model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_guest_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute guest path (start with '/')")
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError("must not contain '..'")
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = normal[1:]
    if normal != value.rstrip("/") and not (value == "/" and normal == "/"):
        raise ValueError(f"must be normalised (write {normal!r})")
    return value


def check_host_path(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    if value.startswith("/") or value.startswith("~"):
        raise ValueError("must be relative to the spec's folder")
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        raise ValueError("must not escape the spec's folder")
    return value


_NO_GIT = (
    "pyro never writes guest output into .git, since a guest-written hook or git config "
    "runs commands at the next git command (archive git metadata in a step instead)"
)


def _check_artifact_target(value: str) -> str:
    if has_git_part(value):
        raise ValueError(f"must not be in a .git folder: {_NO_GIT}")
    return value


# JSON Schema patterns mirroring _check_guest_path/check_host_path for editors; the
# functions above stay the authority. "a/../../x" escaping needs counting, which a regular
# expression cannot do, so the host pattern only catches a leading "..".
GUEST_PATH_SCHEMA_PATTERN = r"^/(?:(?!.*//.)(?!(?:.*/)?\.\.?(?:/|$))[^\x00]*[^/\x00]/*)?$"
HOST_PATH_SCHEMA_PATTERN = r"^(?![/~])(?!(?:\./)*\.\.(?:/|$))[^\x00]+$"
GuestPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, json_schema_extra={"pattern": GUEST_PATH_SCHEMA_PATTERN}),
]
HostPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, json_schema_extra={"pattern": HOST_PATH_SCHEMA_PATTERN}),
]
# Numbers and booleans are strict: YAML already types them, and accepting "5" or "yes"
# would make the models disagree with the generated JSON Schemas.
Timeout = Annotated[int, Field(strict=True, ge=limits.TIMEOUT_SECONDS[0], le=MAX_TIMEOUT_S)]
Vcpus = Annotated[int, Field(strict=True, ge=limits.VCPUS[0], le=limits.VCPUS[1])]
MemoryMiB = Annotated[int, Field(strict=True, ge=limits.MEMORY_MIB[0], le=limits.MEMORY_MIB[1])]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
EnvVars = dict[
    Annotated[str, Field(pattern=ENV_VAR_PATTERN)], Annotated[str, Field(max_length=65536)]
]


class Metadata(Model):
    name: str = Field(
        pattern=NAME_PATTERN, description="Name of this document.", examples=["build-and-test"]
    )
    description: str | None = Field(
        default=None, max_length=1024, description="Free text shown in listings."
    )
    labels: dict[
        Annotated[str, Field(pattern=NAME_PATTERN)], Annotated[str, Field(max_length=256)]
    ] = Field(default={}, description="Free-form key/value labels.", examples=[{"team": "infra"}])


class NetworkPolicy(StrEnum):
    OFF = "off"
    EGRESS = "egress"
    ALLOWLIST = "allowlist"


class Backend(StrEnum):
    AUTO = "auto"
    FIRECRACKER = "firecracker"
    QEMU_KVM = "qemu-kvm"
    QEMU_TCG = "qemu-tcg"


class Cleanup(StrEnum):
    ALWAYS = "always"
    ON_SUCCESS = "on-success"
    NEVER = "never"


class Resources(Model):
    vcpus: Vcpus | None = Field(
        default=None, description="Guest vCPUs; default from the environment.", examples=[2]
    )
    memory_mib: MemoryMiB | None = Field(
        default=None,
        alias="memoryMiB",
        description="Guest memory in MiB; default from the environment.",
        examples=[1024],
    )


class PublishedPort(Model):
    host: Port = Field(description="Port on 127.0.0.1 of the host.", examples=[8080])
    guest: Port = Field(description="TCP port inside the guest.", examples=[80])


ALLOW_PATTERN = r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$"


class Network(Model):
    # The allow/policy rule for JSON Schema; _check_allow below enforces it (and the unique
    # host ports, which JSON Schema cannot express).
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"policy": {"const": "allowlist"}}, "required": ["policy"]},
            "then": {"properties": {"allow": {"minItems": 1}}, "required": ["allow"]},
            "else": {"properties": {"allow": {"maxItems": 0}}},
        }
    )

    policy: NetworkPolicy = Field(
        default=NetworkPolicy.OFF, description="off | egress | allowlist."
    )
    allow: list[Annotated[str, Field(pattern=ALLOW_PATTERN)]] = Field(
        default=[],
        description="host[:port] destinations reachable under the allowlist policy.",
        examples=[["pypi.org:443", "files.pythonhosted.org:443"]],
    )
    publish: list[PublishedPort] = Field(
        default=[], description="Guest ports published on 127.0.0.1."
    )

    @model_validator(mode="after")
    def _check_allow(self) -> "Network":
        if self.policy is NetworkPolicy.ALLOWLIST and not self.allow:
            raise ValueError("policy 'allowlist' needs at least one entry in 'allow'")
        if self.policy is not NetworkPolicy.ALLOWLIST and self.allow:
            raise ValueError("'allow' is only valid with policy 'allowlist'")
        hosts = [p.host for p in self.publish]
        if len(hosts) != len(set(hosts)):
            raise ValueError("each host port may be published once")
        return self


class FileCopy(Model):
    source: HostPath = Field(
        description="Host path, relative to the spec's folder.", examples=["src/"]
    )
    target: GuestPath = Field(description="Absolute guest path.", examples=["/work/src"])

    _source = field_validator("source")(classmethod(lambda cls, v: check_host_path(v)))
    _target = field_validator("target")(classmethod(lambda cls, v: _check_guest_path(v)))


class Artifact(Model):
    source: GuestPath = Field(
        description="Absolute guest path to copy out after the steps.", examples=["/work/dist"]
    )
    target: HostPath = Field(
        description="Host path, relative to the spec's folder; a trailing '/' means a folder; "
        "never in a .git folder.",
        examples=["out/"],
    )

    _source = field_validator("source")(classmethod(lambda cls, v: _check_guest_path(v)))
    _target = field_validator("target")(
        classmethod(lambda cls, v: _check_artifact_target(check_host_path(v)))
    )

    @model_validator(mode="after")
    def _not_into_git(self) -> "Artifact":
        # "dir/" copies the source into dir under its own name: /w/.git to out/ is out/.git.
        name = posixpath.basename(self.source.rstrip("/"))
        if self.target.endswith("/") and has_git_part(name):
            raise ValueError(
                f"source {self.source!r} with target {self.target!r} lands in "
                f"{posixpath.join(self.target, name)!r}, a .git folder; {_NO_GIT}"
            )
        return self


class Step(Model):
    # "exactly one of run/argv" for JSON Schema; _one_command below enforces it.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["run"], "properties": {"run": {"type": "string"}}},
                {"required": ["argv"], "properties": {"argv": {"type": "array"}}},
            ]
        }
    )

    name: str = Field(
        pattern=STEP_NAME_PATTERN, description="Unique within the run.", examples=["test"]
    )
    run: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="Shell string, run with sh -c.",
        examples=["make test"],
    )
    argv: list[Annotated[str, Field(max_length=65536)]] | None = Field(
        default=None,
        min_length=1,
        description="Program and arguments, run without a shell.",
        examples=[["python3", "-m", "pytest", "-q"]],
    )
    cwd: GuestPath | None = Field(
        default=None, description="Working directory in the guest.", examples=["/work"]
    )
    env: EnvVars = Field(default={}, description="Extra environment variables for this step.")
    timeout_seconds: Timeout | None = Field(
        default=None,
        alias="timeoutSeconds",
        description="This step's timeout; exit code 124.",
        examples=[300],
    )
    continue_on_error: bool = Field(
        default=False,
        strict=True,
        alias="continueOnError",
        description="Run the next steps even if this one fails.",
    )

    _cwd = field_validator("cwd")(
        classmethod(lambda cls, v: None if v is None else _check_guest_path(v))
    )

    @model_validator(mode="after")
    def _one_command(self) -> "Step":
        if (self.run is None) == (self.argv is None):
            raise ValueError("a step needs exactly one of 'run' or 'argv'")
        return self

    @property
    def command(self) -> list[str]:
        """The guest argv this step executes."""
        return ["/bin/sh", "-c", self.run] if self.run is not None else list(self.argv or [])


MATRIX_AXIS_PATTERN = r"^[a-z_][a-z0-9_]{0,31}$"
MATRIX_VALUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$"
MatrixValue = (
    Annotated[str, Field(pattern=MATRIX_VALUE_PATTERN)]
    | Annotated[int, Field(strict=True, ge=-(10**9), le=10**9)]
)


class MatrixRange(Model):
    range: int = Field(
        strict=True,
        ge=1,
        le=limits.MATRIX_INSTANCES,
        description="The values 0, 1, … N-1.",
        examples=[4],
    )


MatrixAxis = (
    Annotated[list[MatrixValue], Field(min_length=1, max_length=limits.MATRIX_INSTANCES)]
    | MatrixRange
)


def axis_values(axis: list[str | int] | MatrixRange) -> list[str | int]:
    """The values one matrix axis takes, in order."""
    return list(range(axis.range)) if isinstance(axis, MatrixRange) else list(axis)


def check_matrix(
    matrix: dict[str, list[str | int] | MatrixRange],
) -> dict[str, list[str | int] | MatrixRange]:
    """Each axis lists a value once; the product is at most the instance cap."""
    count = 1
    for name, axis in matrix.items():
        values = axis_values(axis)
        if len({str(value) for value in values}) != len(values):
            raise ValueError(f"matrix axis {name!r} lists a value twice")
        count *= len(values)
    if count > limits.MATRIX_INSTANCES:
        raise ValueError(
            f"expands to {count} instances; at most {limits.MATRIX_INSTANCES} are allowed "
            "(split the matrix over several specs, or use fewer values)"
        )
    return matrix


Matrix = Annotated[
    dict[Annotated[str, Field(pattern=MATRIX_AXIS_PATTERN)], MatrixAxis],
    Field(min_length=1, max_length=limits.MATRIX_AXES),
    AfterValidator(check_matrix),
]


class RunSpecBody(Model):
    environment: str = Field(
        min_length=1,
        max_length=1024,
        description="Catalog name | path to an Environment spec | oci://REF[:tag|@sha256:...].",
        examples=["debian:12", "environments/my-env.yaml", "oci://127.0.0.1:5000/pyro/debian:12"],
        json_schema_extra={"pattern": ENVIRONMENT_SCHEMA_PATTERN},
    )
    backend: Backend = Field(
        default=Backend.AUTO, description="VMM backend; auto picks the best usable one."
    )
    resources: Resources = Field(default=Resources(), description="vCPUs and memory.")
    timeout_seconds: Timeout = Field(
        default=600, alias="timeoutSeconds", description="Whole run, boot included.", examples=[120]
    )
    network: Network = Field(default=Network(), description="Guest network policy.")
    env: EnvVars = Field(
        default={}, description="Environment variables for every step.", examples=[{"CI": "true"}]
    )
    files: list[FileCopy] = Field(default=[], description="Copied host → guest before the steps.")
    steps: list[Step] = Field(min_length=1, description="Commands, run in order.")
    artifacts: list[Artifact] = Field(
        default=[],
        max_length=MAX_ARTIFACTS,
        description="Copied guest → host after the steps (the copy-out caps hold for all "
        "of them together).",
    )
    cleanup: Cleanup = Field(
        default=Cleanup.ALWAYS,
        description="always: delete the VM; on-success: keep it if a step fails; never: keep it.",
    )
    matrix: Matrix | None = Field(
        default=None,
        description="Run one instance per combination of these values, each named "
        "NAME[axis=value,…]; every axis is a template variable of the spec. A list of "
        "values, or {range: N} for 0…N-1.",
        examples=[{"python": ["3.11", "3.12"], "shard": {"range": 4}}],
    )
    retries: int = Field(
        default=1,
        strict=True,
        ge=limits.RETRIES[0],
        le=limits.RETRIES[1],
        description="How many more times a dispatched instance (a matrix's, or any on a "
        "cluster) is tried when its guest did not start, or its node was lost with network "
        "off; a failing step is a result and is never retried.",
    )

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, value: str) -> str:
        parse_environment_ref(value)
        return value

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice")
            seen.add(step.name)
        return steps

    @property
    def environment_ref(self) -> EnvironmentRef:
        return parse_environment_ref(self.environment)


class RunSpec(Model):
    """A Run document: boot an environment, copy files in, run steps, copy artifacts out."""

    api_version: Literal["pyro/v1"] = Field(
        alias="apiVersion", description="Version of the spec format: pyro/v1."
    )
    kind: Literal["Run"] = Field(description="Run: boot an environment and run steps in it.")
    metadata: Metadata = Field(description="Name, description and labels.")
    spec: RunSpecBody = Field(description="What to run and how.")
