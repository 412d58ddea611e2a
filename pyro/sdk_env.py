"""The environment half of the :class:`pyro.Pyro` facade: list, inspect, pull, build, prune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from pyro.environments.service import EnvironmentDetails, EnvironmentStatus, Progress


class PrunedEntry(BaseModel):
    path: str
    reason: str
    size: int


class EnvironmentMethods:
    """Environment methods of :class:`pyro.Pyro`."""

    def list_environments(self) -> list[EnvironmentStatus]:
        """The catalog and the cache: installed, invalid (with why) or not installed."""
        from pyro.environments import service

        return service.list_environments()

    def inspect_environment(self, environment: str, *, verify: bool = False) -> EnvironmentDetails:
        """What an environment is; ``verify`` hashes every artifact.

        Raises:
            EnvironmentNotFoundError: unknown name.
            EnvironmentInvalidError: ``verify`` found a damaged install.
        """
        from pyro.environments import service

        return service.inspect(environment, verify=verify)

    def pull_environment(
        self, environment: str, *, insecure: bool = False, progress: Progress | None = None
    ) -> EnvironmentDetails:
        """Install ``environment`` (catalog name, spec path or oci:// ref): returns at once
        when a valid install exists, else pulls it (or builds it when it has no source).

        Raises:
            EnvironmentNotFoundError, RegistryError, BuildError, CacheError.
        """
        from pyro.environments import service

        install = service.pull(environment, insecure=insecure, progress=progress)
        return service.inspect(install.name)

    def build_environment(
        self, spec_or_name: str, *, progress: Progress | None = None
    ) -> EnvironmentDetails:
        """Build an environment from its spec (catalog name or path) and install it.

        Raises:
            BuildError: a build step failed (the log tail is in the message).
        """
        from pyro.environments import service

        install = service.build(spec_or_name, progress=progress, base_dir=Path.cwd())
        return service.inspect(install.name)

    def push_environment(self, environment: str, ref: str, *, insecure: bool = False) -> str:
        """Push an installed environment to ``oci://REGISTRY/REPO:TAG``; returns the digest.

        Raises:
            RegistryError: the registry refused or could not be reached.
        """
        from pyro.environments import service

        return service.push(environment, ref, insecure=insecure)

    def prune_environments(self) -> list[PrunedEntry]:
        """Remove invalid and superseded installs and stale temp dirs; say what went."""
        from pyro.environments import service

        return [
            PrunedEntry(path=str(item.path), reason=item.reason, size=item.size)
            for item in service.prune()
        ]
