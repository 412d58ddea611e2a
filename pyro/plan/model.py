"""Plan documents: what applying a Run spec will do, as plain, deterministic data (contract §2).

Pure: no I/O, no clock. A :class:`Plan` is built only through :func:`seal`, which computes its
``digest`` over the canonical JSON of every other field, so two plans with the same content
have the same digest on any machine. JSON keys are snake_case and sorted (an Environment
document a build step carries keeps its spec's own keys); no field holds a timestamp.

A plan is self-contained: apply reads nothing but the plan and what its digests pin. The one
absolute host path it holds is ``spec_dir``, the Run spec's folder, which every relative host
path (copy-in sources, artifact targets, an Environment's build inputs) starts from.
"""

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pyro.errors import PlanError
from pyro.plan.inventory import KvmKind
from pyro.spec.environment import EnvironmentSpec

PLAN_API_VERSION = "pyro/v1"

StepAction = Literal["pull", "build", "boot", "copy-in", "exec", "copy-out", "cleanup"]
ACTIONS: tuple[StepAction, ...] = (
    "pull",
    "build",
    "boot",
    "copy-in",
    "exec",
    "copy-out",
    "cleanup",
)


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanIssue(_Data):
    """One reason the plan cannot be applied (``errors``), or one thing it will do that its
    user may not expect (``warnings``)."""

    code: str = Field(description="Stable machine-readable code, e.g. 'environment.unknown'.")
    message: str
    hint: str
    pointer: str | None = Field(default=None, description="JSON pointer into the Run spec.")


class PlanMetadata(_Data):
    name: str = Field(
        description="metadata.name of the Run spec; a matrix instance's NAME[axis=value,…]."
    )


class InventorySummary(_Data):
    """The facts about the host that decided this plan (nothing else, no paths)."""

    arch: str
    kvm: KvmKind
    backend: str | None = Field(description="The VMM backend chosen; None when none is usable.")
    backend_reason: str = Field(description="Why this backend (and not the ones before it).")


class PlanEnvironment(_Data):
    ref: str = Field(description="The environment reference as written in the spec.")
    name: str
    version: str | None = Field(description="None when only a pull will tell (oci:// refs).")
    digest: str | None = Field(
        description="Pinned digest: for an install, its content digest (sha256 over the "
        "kernel's and rootfs's sha256, the same wherever the same bytes are installed); the "
        "remote manifest digest for a pull; the spec digest for a build; None when not known "
        "before pulling."
    )
    origin: Literal["installed", "pull", "build"]


class PlanResources(_Data):
    vcpus: int
    memory_mib: int


class PlanNetwork(_Data):
    policy: Literal["off", "egress", "allowlist"]
    allow: list[str] = []
    publish: list[dict[str, int]] = Field(default=[], description="[{host, guest}] port pairs.")


class PullStep(_Data):
    id: str
    action: Literal["pull"] = "pull"
    ref: str = Field(description="oci:// reference to pull from.")
    digest: str | None = Field(description="Manifest digest the pull must match, when known.")


class BuildStep(_Data):
    id: str
    action: Literal["build"] = "build"
    ref: str = Field(description="Catalog name or Environment spec path (relative) to build.")
    spec_digest: str = Field(
        description="sha256 of the document, its kernel fragment and the builder version; "
        "apply refuses to build when it no longer matches."
    )
    document: EnvironmentSpec = Field(
        description="The Environment document to build: apply reads no spec file."
    )
    folder: str | None = Field(
        description="Where the document's relative paths (its kernel fragment) are read "
        "from, relative to spec_dir; None: pyro's own catalog folder."
    )


class BootStep(_Data):
    id: str
    action: Literal["boot"] = "boot"
    backend: str | None
    vcpus: int
    memory_mib: int
    environment_digest: str | None = Field(
        description="Content digest of the install to boot (as environment.digest); None "
        "when a pull or build earlier in the plan makes it."
    )
    agent_digest: str | None = Field(
        description="sha256 of the guest agent's sources and build flags "
        "(pyro.guest.build.agent_source_digest); None: not pinned."
    )
    network: PlanNetwork
    mode: Literal["cold", "restore"] = Field(
        default="cold",
        description="cold: boot the kernel; restore: resume a saved ready guest of this "
        "environment and shape (falls back to cold if the snapshot turns out invalid).",
    )


class CopyInStep(_Data):
    id: str
    action: Literal["copy-in"] = "copy-in"
    source: str = Field(description="Host path relative to spec_dir, as written.")
    target: str
    digest: str | None = Field(
        description="sha256 of the source's content when planned (its files' relative "
        "paths, modes and bytes); None: it did not exist or could not be copied."
    )
    by: Literal["agent", "disk"] = Field(
        default="agent",
        description="agent: each file through the guest agent; disk: one archive on the "
        "VM's spare disk the guest extracts (QEMU; chosen by size, docs/performance.md).",
    )


class ExecStep(_Data):
    id: str
    action: Literal["exec"] = "exec"
    name: str
    argv: list[str]
    cwd: str | None
    env: dict[str, str]
    timeout_seconds: int | None = Field(description="None: bounded only by the run's timeout.")
    continue_on_error: bool


class CopyOutStep(_Data):
    id: str
    action: Literal["copy-out"] = "copy-out"
    source: str
    target: str = Field(description="Host path relative to spec_dir, as written.")


class CleanupStep(_Data):
    id: str
    action: Literal["cleanup"] = "cleanup"
    policy: Literal["always", "on-success", "never"]


PlanStep = Annotated[
    PullStep | BuildStep | BootStep | CopyInStep | ExecStep | CopyOutStep | CleanupStep,
    Field(discriminator="action"),
]


class Plan(_Data):
    """A deterministic description of one Run: environment, backend, resources and steps."""

    api_version: Literal["pyro/v1"] = Field(default="pyro/v1", alias="apiVersion")
    kind: Literal["Plan"] = "Plan"
    metadata: PlanMetadata
    digest: str = Field(description="sha256 of the canonical JSON of every other field.")
    spec_dir: str | None = Field(
        description="Absolute folder of the Run spec: relative host paths start here, "
        "wherever the plan is applied from. None: planned from a bare spec object."
    )
    applyable: bool
    errors: list[PlanIssue] = []
    warnings: list[PlanIssue] = Field(
        default=[],
        description="What the plan will do that its user may not expect, e.g. build an "
        "environment locally because its registry did not answer; it stays applyable.",
    )
    inventory: InventorySummary
    environment: PlanEnvironment | None
    resources: PlanResources
    timeout_seconds: int = Field(description="Whole run, boot included.")
    steps: list[PlanStep]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def step(
        self, step_id: str
    ) -> PullStep | BuildStep | BootStep | CopyInStep | ExecStep | CopyOutStep | CleanupStep:
        """The step with this id.

        Raises:
            KeyError: no step has this id.
        """
        for candidate in self.steps:
            if candidate.id == step_id:
                return candidate
        raise KeyError(step_id)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_digest(body: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of a plan's JSON object without its ``digest`` key."""
    content = {key: value for key, value in body.items() if key != "digest"}
    return "sha256:" + hashlib.sha256(_canonical(content).encode()).hexdigest()


def seal(**fields: Any) -> Plan:
    """Build a :class:`Plan` from its fields (all but ``digest``) and compute its digest."""
    draft = Plan.model_validate({**fields, "digest": ""})
    body = draft.model_dump(mode="json", by_alias=True)
    return draft.model_copy(update={"digest": compute_digest(body)})


def render_json(plan: Plan) -> str:
    """The Plan document as JSON: sorted keys, indent 2, trailing newline."""
    body = plan.model_dump(mode="json", by_alias=True)
    return json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def plan_from_json(text: str) -> Plan:
    """Read a Plan document written by :func:`render_json` and check its digest.

    Raises:
        PlanError: the text is not JSON, not a Plan, or its digest does not match its content.
    """
    hint = "make a fresh plan with 'pyro plan FILE --json'"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"plan is not valid JSON: {exc.msg} at line {exc.lineno}", hint) from exc
    except RecursionError as exc:  # arrays or objects nested thousands deep
        raise PlanError("plan is not a Plan document: nested too deep", hint) from exc
    if not isinstance(data, dict):
        raise PlanError("plan is not a JSON object", hint)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "/" + "/".join(str(part) for part in first["loc"])
        raise PlanError(
            f"plan is not a valid Plan document: {where}: {first['msg']}", hint
        ) from exc
    expected = compute_digest(plan.model_dump(mode="json", by_alias=True))
    if plan.digest != expected:
        raise PlanError(
            f"plan digest {plan.digest} does not match its content ({expected})",
            "the plan was edited after it was made; " + hint,
        )
    return plan
