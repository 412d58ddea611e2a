"""The whole PyroError tree.

Every error pyro raises on purpose is a :class:`PyroError`: it carries a one-line
``summary`` (what went wrong, where) and a ``hint`` (what the user can do about it).
Foreign exceptions are mapped to these once, in the adapter that calls the foreign
code, and raised ``from`` the original cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class PyroError(Exception):
    """Raised when pyro cannot do what was asked; base of every pyro error."""

    default_hint = "run 'pyro doctor' to check this host, or see docs/troubleshooting.md"

    def __init__(self, summary: str, hint: str | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.hint = hint if hint is not None else self.default_hint

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.summary, "hint": self.hint}

    def __str__(self) -> str:
        return self.summary


@dataclass(frozen=True)
class SpecIssue:
    """One problem found in a spec document, located as precisely as possible."""

    message: str
    pointer: str = ""
    file: str | None = None
    line: int | None = None
    column: int | None = None
    expected: str | None = None
    found: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def render(self) -> str:
        text = f"{self.location}: {self.pointer or '/'}: {self.message}"
        details = []
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        if self.found is not None:
            details.append(f"found {self.found}")
        if details:
            text += f" ({'; '.join(details)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer,
            "message": self.message,
            "expected": self.expected,
            "found": self.found,
        }


class SpecError(PyroError):
    """Raised when a spec document cannot be read, rendered or validated."""

    default_hint = "fix the spec at the location shown; 'pyro validate FILE' lists every problem"

    def __init__(self, issues: list[SpecIssue], hint: str | None = None) -> None:
        self.issues = list(issues)
        first = self.issues[0].render() if self.issues else "invalid spec"
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(first + more, hint)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["issues"] = [issue.to_dict() for issue in self.issues]
        return data


class UsageError(PyroError):
    """Raised when a command or SDK call is given arguments that do not fit together."""

    default_hint = "see 'pyro COMMAND --help'"


class OutsideRootError(UsageError):
    """Raised when a host path a confined caller names (an MCP client, ``Pyro(confine_to=)``)
    resolves outside the folders it may use."""

    default_hint = "use a path inside the allowed folder"


class PlanError(PyroError):
    """Raised when a plan cannot be made or is not applyable."""

    default_hint = "run 'pyro plan FILE' to see the plan's errors"


class StalePlanError(PlanError):
    """Raised when a plan's pinned digests no longer match what is installed."""

    default_hint = "make a new plan with 'pyro plan' and apply that"


class EnvironmentNotFoundError(PyroError):
    """Raised when an environment is neither installed, in the catalog, nor a readable spec."""

    default_hint = "run 'pyro env list' to see the environments pyro knows"


class EnvironmentInvalidError(PyroError):
    """Raised when an installed environment fails its integrity check."""

    default_hint = "run 'pyro env pull ENV' to repair it, or 'pyro env prune' to remove it"


class BuildError(PyroError):
    """Raised when building a kernel, agent or root filesystem fails."""

    default_hint = "check the build log shown; 'pyro doctor' lists the host tools builds need"


class RegistryError(PyroError):
    """Raised when an OCI registry refuses, cannot be reached, or sends bad content."""

    default_hint = "check the reference, the registry address and credentials"


class CacheError(PyroError):
    """Raised when the local cache cannot be read or written."""

    default_hint = "check free disk space and permissions of $PYRO_CACHE_DIR"


class BackendUnavailableError(PyroError):
    """Raised when no VMM backend (or not the one asked for) can run a guest on this host."""

    default_hint = "run 'pyro doctor' to see which backends this host supports"


class VMMError(PyroError):
    """Raised when the VMM process fails to start, configure or stop a VM."""


class BootError(VMMError):
    """Raised when a guest does not reach its agent's hello in time."""

    default_hint = "the tail of the serial log is shown above; 'pyro vm logs ID' prints all of it"


class GuestError(PyroError):
    """Raised when the guest agent reports an error or breaks the protocol."""

    default_hint = "the guest may have crashed; 'pyro vm logs ID' prints its serial log"


class GuestPathError(GuestError):
    """Raised when a guest path or host path of a file transfer is refused."""

    default_hint = "use an absolute guest path and a host path inside the allowed root"


class RunTimeoutError(PyroError):
    """Raised when a run or command exceeds its timeout."""

    default_hint = "raise timeoutSeconds, or make the command finish sooner"


class NotFoundError(PyroError):
    """Raised when a VM or task id names nothing in the registry."""

    default_hint = "run 'pyro vm list' or 'pyro task list' to see what exists"


class LimitError(PyroError):
    """Raised when a request exceeds a host limit (VMs, memory, vCPUs, sizes)."""

    default_hint = "ask for fewer resources or free some (delete unused VMs and tasks)"


class StateError(PyroError):
    """Raised when a VM or task is not in a state that allows the operation."""

    default_hint = "check its state with 'pyro vm status ID' or 'pyro task status ID'"


class NetworkError(PyroError):
    """Raised when a network policy cannot be set up (ports in use, missing host tools)."""

    default_hint = "choose another host port, or run 'pyro doctor' to see network support"


class CommandOutcome(Protocol):
    """What :class:`CommandFailedError` needs of a result (``RunResult``, ``ExecOutput``)."""

    @property
    def exit_code(self) -> int | None: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


class CommandFailedError(PyroError):
    """Raised by a ``check=True`` call (``run_in_vm``, ``apply``, ``exec_vm``, ``exec_task``)
    whose command failed or timed out, or whose run failed: pyro's
    :class:`subprocess.CalledProcessError`. ``result`` is the whole result the call would
    have returned; ``exit_code`` (None when no command ran), ``stdout`` and ``stderr`` are
    its fields."""

    default_hint = "see its stderr; without check=True the call returns the result instead"

    def __init__(self, summary: str, result: CommandOutcome, hint: str | None = None) -> None:
        super().__init__(summary, hint)
        self.result = result
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["exit_code"] = self.exit_code
        return data
