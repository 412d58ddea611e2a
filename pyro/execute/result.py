"""What applying a plan returns: always a result, partial when a step failed (contract §2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pyro.errors import CommandFailedError
from pyro.plan.model import PlanIssue

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


class InstanceInfo(BaseModel):
    """How a dispatched run went (an instance of a matrix, or any run on a cluster)."""

    model_config = ConfigDict(extra="forbid")

    values: dict[str, str | int] = Field(
        default={}, description="The instance's matrix values (empty: not a matrix)."
    )
    attempt: int = Field(default=1, description="Which try this result is (1: the first).")
    node: str | None = Field(default=None, description="The cluster node it ran on.")


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
    stdout: str = Field(
        default="", description="The reported command's stdout (see reported_step)."
    )
    stderr: str = Field(
        default="", description="The reported command's stderr (see reported_step)."
    )
    timed_out: bool = False
    failed_step: str | None = None
    error: dict[str, Any] | None = None
    duration_ms: int
    steps: list[StepResult]
    warnings: list[PlanIssue] = []
    """The plan's warnings (e.g. its environment was built because its registry did not
    answer)."""
    artifacts_dir: str | None = None
    """The fresh host folder a confined run (MCP, ``Pyro(confine_to=)``) copied its artifacts
    into; None when it copied none, or for an unconfined run (artifacts are then relative
    to the spec's folder)."""
    instance: InstanceInfo | None = Field(
        default=None,
        description="Set for a dispatched run (a matrix instance, a cluster run): its "
        "matrix values, attempt and node; name is then the instance's NAME[axis=value,…].",
    )

    def exec_steps(self) -> list[StepResult]:
        return [step for step in self.steps if step.action == "exec"]

    def check_returncode(self) -> None:
        """Raise if the run failed, as :meth:`subprocess.CompletedProcess.check_returncode`.

        Raises:
            CommandFailedError: ``ok`` is false (a command failed or timed out, or pyro
                could not carry a step out); it carries this result.
        """
        if self.ok:
            return
        where = f"run {self.name!r} failed"
        if self.failed_step is not None:
            where += f" at step {self.failed_step}"
        if self.timed_out:
            raise CommandFailedError(f"{where}: timed out (exit code {self.exit_code})", self)
        if self.error is not None:
            raise CommandFailedError(
                f"{where}: {self.error.get('message', 'pyro error')}", self, self.error.get("hint")
            )
        raise CommandFailedError(f"{where}: exit code {self.exit_code}", self)


def reported_step(steps: list[StepResult], failed_step: str | None) -> StepResult | None:
    """The exec step whose output a run's top-level ``exit_code``/``stdout``/``stderr``
    report: the one that failed the run, else the last one that ran."""
    ran = [step for step in steps if step.action == "exec" and step.status != "skipped"]
    failed = [step for step in ran if step.id == failed_step]
    shown = failed or ran[-1:]
    return shown[0] if shown else None
