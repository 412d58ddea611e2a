"""Structured results for tools whose SDK method returns a bare value (a bool, a list).

Everything else returns the SDK's own pydantic model, so a tool's output schema is the
model's JSON schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from pyro.environments.service import EnvironmentStatus
from pyro.sdk.vm import VMInfo
from pyro.tasks.manager import TaskInfo


class Deleted(BaseModel):
    """What ``vm_delete``/``task_delete`` report."""

    id: str
    deleted: bool
    """False when nothing by that id existed (deleting twice is not an error)."""


class VMList(BaseModel):
    """What ``vm_list`` reports: every VM, oldest first."""

    vms: list[VMInfo]


class SpecSummary(BaseModel):
    """What ``spec_validate`` reports about a valid spec (an invalid one is a tool error)."""

    valid: Literal[True] = True
    kind: Literal["Run", "Environment"]
    name: str


class TaskList(BaseModel):
    """What ``task_list`` reports: every task, oldest first."""

    tasks: list[TaskInfo]


class EnvList(BaseModel):
    """What ``env_list`` reports: catalog and installed environments, by name."""

    environments: list[EnvironmentStatus]
