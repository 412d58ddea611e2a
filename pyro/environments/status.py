"""What environment operations report: statuses for listings and inspections, and progress
events for pulls, builds and pushes (see :mod:`pyro.environments.service`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a pull, build or push, for progress displays.

    ``phase`` is ``install`` (work starts), ``download``/``upload`` (bytes move; ``done``
    and ``total`` are bytes), ``build`` (a build log line in ``message``), ``warning``
    (something the user should know, in ``message``) or ``ready``.
    """

    phase: str
    environment: str
    message: str = ""
    done: int = 0
    total: int = 0


Progress = Callable[[ProgressEvent], None]


class EnvironmentStatus(BaseModel):
    """An environment pyro knows: from the catalog, the cache, or both."""

    model_config = ConfigDict(frozen=True)

    name: str
    state: Literal["installed", "invalid", "not-installed"]
    reason: str = ""
    version: str | None = None
    digest: str | None = None
    spec_digest: str | None = None
    source: str | None = None
    in_catalog: bool = False
    path: str | None = None
    warnings: list[str] = []
    """What the pull that returned this status reported (e.g. an artifact that calls
    itself by another name); empty in listings and inspections."""


class EnvironmentDetails(EnvironmentStatus):
    """:class:`EnvironmentStatus` plus the install manifest and whether it was hashed."""

    verified: bool = False
    kernel: str | None = None
    rootfs: str | None = None
    manifest: dict[str, Any] | None = None
