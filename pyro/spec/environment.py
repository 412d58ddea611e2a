"""Pydantic models of the Environment document (contract §1): how a guest is built or pulled.

Its own module so that reading a Run document never defines them: a Run spec names an
environment, and only a build, a catalog summary or an Environment document needs these.
Pure: no I/O. The shared pieces (paths, resources, network rules) live in
:mod:`pyro.spec.model`.
"""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from pyro.spec.model import (
    ALLOW_PATTERN,
    ENV_NAME_PATTERN,
    FileCopy,
    HostPath,
    MemoryMiB,
    Metadata,
    Model,
    Network,
    NetworkPolicy,
    RunSpec,
    Timeout,
    Vcpus,
    check_host_path,
)
from pyro.spec.ref import OCI_SCHEMA_PATTERN, OciRef, parse_environment_ref


class EnvironmentMetadata(Metadata):
    name: str = Field(
        pattern=ENV_NAME_PATTERN,
        description="Catalog name, e.g. debian:12.",
        examples=["debian:12"],
    )


class KernelSpec(Model):
    package: Literal["linux-source-6.1"] = Field(
        default="linux-source-6.1", description="Debian package providing the kernel source."
    )
    fragment: HostPath = Field(
        description="Kernel config fragment, relative to the spec's folder.",
        examples=["kernels/pyro-6.1.config"],
    )

    @field_validator("fragment")
    @classmethod
    def _fragment(cls, value: str) -> str:
        return check_host_path(value)


PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]{0,127}$"


class RootfsSpec(Model):
    distribution: Literal["debian"] = Field(default="debian", description="Guest distribution.")
    suite: Literal["bookworm"] = Field(default="bookworm", description="Debian suite.")
    variant: Literal["minbase", "essential", "apt", "required", "important", "standard"] = Field(
        default="minbase", description="mmdebstrap variant."
    )
    packages: list[Annotated[str, Field(pattern=PACKAGE_PATTERN)]] = Field(
        default=[], description="Extra Debian packages to install.", examples=[["git", "make"]]
    )
    size_mib: int = Field(
        default=1024,
        strict=True,
        ge=64,
        le=65536,
        alias="sizeMiB",
        description="Size of the root filesystem image in MiB.",
    )


class Defaults(Model):
    vcpus: Vcpus = Field(default=1, description="vCPUs when a Run does not ask.")
    memory_mib: MemoryMiB = Field(
        default=512, alias="memoryMiB", description="Memory in MiB when a Run does not ask."
    )


OCI_SOURCE_PATTERN = r"^oci://.+$"


class SourceSpec(Model):
    ref: str = Field(
        pattern=OCI_SOURCE_PATTERN,
        description="oci://REGISTRY/REPOSITORY[:tag] that 'env pull' uses.",
        examples=["oci://127.0.0.1:5000/pyro/debian:12"],
        json_schema_extra={"pattern": OCI_SCHEMA_PATTERN},
    )
    insecure: bool = Field(
        default=False, strict=True, description="Allow plain http for a non-loopback registry."
    )

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        parse_environment_ref(value)
        return value


SEMVER_PATTERN = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$"
IMAGE_SCHEMA_PATTERN = "^(?:oci://)?" + OCI_SCHEMA_PATTERN.removeprefix("^oci://")


class ImageSpec(Model):
    image: str = Field(
        description="Container image the root filesystem is made from: "
        "REGISTRY/REPOSITORY[:TAG][@sha256:HEX] ('oci://' optional).",
        examples=["127.0.0.1:5000/library/python:3.12-slim"],
        json_schema_extra={"pattern": IMAGE_SCHEMA_PATTERN},
    )
    insecure: bool = Field(
        default=False, strict=True, description="Allow plain http for a non-loopback registry."
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        ref = parse_environment_ref("oci://" + value.removeprefix("oci://"))
        if not isinstance(ref, OciRef):  # pragma: no cover - the prefix makes it one
            raise ValueError("is not a registry reference")
        return value

    @property
    def ref(self) -> str:
        """The image as an ``oci://`` reference."""
        return "oci://" + self.image.removeprefix("oci://")


MAX_IMAGE_FILES = 64


class SetupNetwork(Model):
    """A setup guest's network: a Run's policies, without published ports."""

    model_config = Network.model_config

    policy: NetworkPolicy = Field(
        default=NetworkPolicy.OFF, description="off | egress | allowlist."
    )
    allow: list[Annotated[str, Field(pattern=ALLOW_PATTERN)]] = Field(
        default=[],
        description="host[:port] destinations reachable under the allowlist policy.",
        examples=[["deb.debian.org:80"]],
    )

    @model_validator(mode="after")
    def _check_allow(self) -> "SetupNetwork":
        Network(policy=self.policy, allow=self.allow)  # the same rules, the same messages
        return self


class ImageSetup(Model):
    run: str = Field(
        min_length=1,
        max_length=65536,
        description="Shell string, run once with sh -c as root in a guest booted from the "
        "image (with 'files' added); what it changes becomes the environment.",
        examples=["apt-get install -y git && adduser --disabled-password app"],
    )
    timeout_seconds: Timeout = Field(
        default=600,
        alias="timeoutSeconds",
        description="How long the setup command may take; past it the build fails.",
        examples=[1800],
    )
    network: SetupNetwork = Field(
        default=SetupNetwork(), description="The setup guest's network (default off)."
    )


def _setup_short_form(schema: dict[str, Any]) -> None:
    """``setup`` may also be a plain string (the long form's ``run``)."""
    schema["anyOf"].insert(1, {"type": "string", "minLength": 1, "maxLength": 65536})


def _is_none(value: object) -> bool:
    return value is None


def _is_empty(value: object) -> bool:
    return not value


class EnvironmentSpecBody(Model):
    # "from, or kernel and rootfs" for JSON Schema; _one_recipe below enforces it.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["from"],
                    "not": {"anyOf": [{"required": ["kernel"]}, {"required": ["rootfs"]}]},
                },
                {
                    "required": ["kernel", "rootfs"],
                    "not": {
                        "anyOf": [
                            {"required": ["from"]},
                            {"required": ["files"]},
                            {"required": ["setup"]},
                        ]
                    },
                },
            ]
        }
    )

    version: str = Field(
        pattern=SEMVER_PATTERN, description="Semantic version, e.g. 1.0.0.", examples=["1.0.0"]
    )
    kernel: KernelSpec | None = Field(
        default=None, description="How the guest kernel is built (not with 'from')."
    )
    rootfs: RootfsSpec | None = Field(
        default=None, description="How the root filesystem is built (not with 'from')."
    )
    from_: ImageSpec | None = Field(
        default=None,
        alias="from",
        description="Build from a container image instead of kernel and rootfs: the image "
        "becomes the root filesystem, the catalog's kernel boots it.",
        # An unset 'from' is left out: the spec digests (and plans, and cached catalog
        # summaries) of specs written before it existed stay what they were.
        exclude_if=_is_none,
    )
    files: list[FileCopy] = Field(
        default=[],
        max_length=MAX_IMAGE_FILES,
        description="Host files and folders added to the image's root filesystem (only with "
        "'from'), before 'setup' runs; owned by root, permission bits kept.",
        exclude_if=_is_empty,
    )
    setup: ImageSetup | None = Field(
        default=None,
        description="A command run once, as root, in a guest booted from the image at build "
        "time (only with 'from'): a shell string, or {run, timeoutSeconds, network}.",
        examples=["echo built > /etc/built"],
        json_schema_extra=_setup_short_form,
        exclude_if=_is_none,
    )
    defaults: Defaults = Field(default=Defaults(), description="Resources Runs get by default.")
    source: SourceSpec | None = Field(
        default=None, description="OCI repository that 'env pull' uses instead of building."
    )

    @field_validator("setup", mode="before")
    @classmethod
    def _setup(cls, value: Any) -> Any:
        # The short form is the long form's 'run': its bounds and errors are the same.
        return {"run": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_recipe(self) -> "EnvironmentSpecBody":
        if self.from_ is not None and (self.kernel is not None or self.rootfs is not None):
            raise ValueError("give either 'from' (a container image) or 'kernel' and 'rootfs'")
        if self.from_ is None and (self.files or self.setup is not None):
            raise ValueError(
                "'files' and 'setup' go with 'from' (a container image); a Debian build "
                "lists 'rootfs.packages' instead"
            )
        if self.from_ is None and (self.kernel is None or self.rootfs is None):
            missing = [k for k in ("kernel", "rootfs") if getattr(self, k) is None]
            raise ValueError(
                f"missing {' and '.join(repr(k) for k in missing)}: an Environment is built "
                "from 'kernel' and 'rootfs', or 'from' a container image"
            )
        return self


class EnvironmentSpec(Model):
    """An Environment document: how to build (or where to pull) a guest kernel + rootfs."""

    api_version: Literal["pyro/v1"] = Field(
        alias="apiVersion", description="Version of the spec format: pyro/v1."
    )
    kind: Literal["Environment"] = Field(
        description="Environment: how to build or pull a guest kernel and root filesystem."
    )
    metadata: EnvironmentMetadata = Field(description="Catalog name, description and labels.")
    spec: EnvironmentSpecBody = Field(description="How to build or pull the environment.")


AnySpec = RunSpec | EnvironmentSpec
KINDS: dict[str, type[RunSpec] | type[EnvironmentSpec]] = {
    "Run": RunSpec,
    "Environment": EnvironmentSpec,
}
