"""What applying a plan returns: always a result, partial when a step failed (contract §2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

StepStatus = Literal["ok", "failed", "timed-out", "skipped", "error"]


class StepResult(BaseModel):
    """The outcome of one plan step."""

    model_config = ConfigDict(extra="forbid")

    id: str
    action: str
    name: str | None = None
    status: StepStatus
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int = 0
    message: str | None = None


class RunResult(BaseModel):
    """The outcome of a whole run. ``ok`` is false when a step failed or pyro hit an error."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    name: str
    plan_digest: str
    environment: str | None
    environment_digest: str | None
    backend: str | None
    vm_id: str | None
    vm_kept: bool = False
    exit_code: int | None
    timed_out: bool = False
    failed_step: str | None = None
    error: dict[str, Any] | None = None
    duration_ms: int
    steps: list[StepResult]
    artifacts_dir: str | None = None
    """The fresh host folder a confined run (MCP, ``Pyro(confine_to=)``) copied its artifacts
    into; None when it copied none, or for an unconfined run (artifacts are then relative
    to the spec's folder)."""

    def exec_steps(self) -> list[StepResult]:
        return [step for step in self.steps if step.action == "exec"]
