"""pyro: run commands inside ephemeral microVMs, from declarative specs.

The public Python API::

    from pyro import Pyro
    result = Pyro().run_in_vm("debian:12", "git --version", check=True)
    print(result.stdout)

Everything a caller needs is named here: :class:`Pyro` and :class:`AsyncPyro`, the result
types, the argument types and every error. Heavy modules are imported on first use, so
``import pyro`` stays cheap (it loads only :mod:`pyro.errors`).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pyro import errors
from pyro.__about__ import __version__
from pyro.errors import (
    BackendUnavailableError,
    BootError,
    BuildError,
    CacheError,
    CommandFailedError,
    EnvironmentInvalidError,
    EnvironmentNotFoundError,
    GuestError,
    GuestPathError,
    LimitError,
    NetworkError,
    NotFoundError,
    OutsideRootError,
    PlanError,
    PyroError,
    RegistryError,
    RunTimeoutError,
    SpecError,
    SpecIssue,
    StalePlanError,
    StateError,
    UsageError,
    VMMError,
)
from pyro.lazy import lazy_attributes

if TYPE_CHECKING:
    from pyro.sdk import (
        BackendName,
        CommandNetwork,
        EnvironmentDetails,
        EnvironmentSpec,
        EnvironmentStatus,
        ExecOutput,
        FileEntry,
        JournalEntry,
        Plan,
        ProcessOutput,
        PrunedEntry,
        Pyro,
        Readiness,
        RunResult,
        RunSpec,
        ServiceInfo,
        ShellInfo,
        SnapshotInfo,
        SpecSource,
        StepResult,
        SyncResult,
        TaskExecOutput,
        TaskFileWritten,
        TaskInfo,
        TaskLogs,
        VMInfo,
        VMLogs,
    )
    from pyro.sdk.aio import AsyncPyro
    from pyro.spec.load import LoadedSpec

#: The names imported from :mod:`pyro.sdk` on first use (and AsyncPyro, from pyro.sdk.aio).
_SDK_NAMES = (
    "BackendName",
    "CommandNetwork",
    "EnvironmentDetails",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "ExecOutput",
    "FileEntry",
    "JournalEntry",
    "Plan",
    "ProcessOutput",
    "PrunedEntry",
    "Pyro",
    "Readiness",
    "RunResult",
    "RunSpec",
    "ServiceInfo",
    "ShellInfo",
    "SnapshotInfo",
    "StepResult",
    "SyncResult",
    "TaskExecOutput",
    "TaskFileWritten",
    "TaskInfo",
    "TaskLogs",
    "VMInfo",
    "VMLogs",
)

__all__ = [
    "AsyncPyro",
    "BackendName",
    "BackendUnavailableError",
    "BootError",
    "BuildError",
    "CacheError",
    "CommandFailedError",
    "CommandNetwork",
    "EnvironmentDetails",
    "EnvironmentInvalidError",
    "EnvironmentNotFoundError",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "ExecOutput",
    "FileEntry",
    "GuestError",
    "GuestPathError",
    "JournalEntry",
    "LimitError",
    "NetworkError",
    "NotFoundError",
    "OutsideRootError",
    "Plan",
    "PlanError",
    "ProcessOutput",
    "PrunedEntry",
    "Pyro",
    "PyroError",
    "Readiness",
    "RegistryError",
    "RunResult",
    "RunSpec",
    "RunTimeoutError",
    "ServiceInfo",
    "ShellInfo",
    "SnapshotInfo",
    "SpecError",
    "SpecIssue",
    "StalePlanError",
    "StateError",
    "StepResult",
    "SyncResult",
    "TaskExecOutput",
    "TaskFileWritten",
    "TaskInfo",
    "TaskLogs",
    "UsageError",
    "VMInfo",
    "VMLogs",
    "VMMError",
    "__version__",
    "apply",
    "errors",
    "load_spec",
    "plan",
]


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, object] | RunSpec | EnvironmentSpec,
    *,
    vars: Mapping[str, object] | None = None,
) -> LoadedSpec:
    """Load and validate one spec document (path, mapping or model). Raises SpecError."""
    from pyro.spec.load import load_spec as _load

    return _load(source, vars=vars)


def plan(spec_or_path: SpecSource, *, vars: Mapping[str, object] | None = None) -> Plan:
    """Plan a Run spec; see :meth:`Pyro.plan`."""
    from pyro.sdk import Pyro

    return Pyro().plan(spec_or_path, vars=vars)


def apply(
    spec_or_plan: SpecSource | Plan,
    *,
    vars: Mapping[str, object] | None = None,
    check: bool = False,
) -> RunResult:
    """Plan (unless given a Plan) and apply a Run spec; see :meth:`Pyro.apply`."""
    from pyro.sdk import Pyro

    return Pyro().apply(spec_or_plan, vars=vars, check=check)


__getattr__ = lazy_attributes(
    __name__, {**dict.fromkeys(_SDK_NAMES, "pyro.sdk"), "AsyncPyro": "pyro.sdk.aio"}
)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The ``pyro`` module: ``pyro.plan`` stays the function above when the subpackage
    ``pyro.plan`` is imported (which would otherwise bind its name over the function)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "plan" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
