"""The environment half of the :class:`pyro.Pyro` facade: list, inspect, pull, build, prune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from pyro.environments.service import EnvironmentDetails, EnvironmentStatus, Progress
    from pyro.host.confine import Root


class PrunedEntry(BaseModel):
    path: str
    reason: str
    size: int


class EnvironmentMethods:
    """Environment methods of :class:`pyro.Pyro`.

    Confined (``Pyro(confine_to=)``), an environment given as a spec path must be inside
    the root, and so must the kernel fragment it names (:class:`~pyro.errors.OutsideRootError`).
    """

    _root: Root | None = None  # confined by Pyro(confine_to=); None: the caller is trusted

    def _environment(self, environment: str) -> str:
        return environment if self._root is None else self._root.environment(environment)

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

        return service.inspect(self._environment(environment), verify=verify)

    def pull_environment(
        self, environment: str, *, insecure: bool = False, progress: Progress | None = None
    ) -> EnvironmentDetails:
        """Install ``environment`` (catalog name, spec path or oci:// ref): returns at once
        when a valid install exists, else pulls it (or builds it when it has no source).

        Raises:
            EnvironmentNotFoundError, RegistryError, BuildError, CacheError.
        """
        from pyro.environments import service

        install = service.pull(self._environment(environment), insecure=insecure, progress=progress)
        details = service.inspect(install.name)
        return details.model_copy(update={"warnings": list(install.warnings)})

    def build_environment(
        self, spec_or_name: str, *, progress: Progress | None = None
    ) -> EnvironmentDetails:
        """Build an environment from its spec (catalog name or path) and install it.

        Raises:
            BuildError: a build step failed (the log tail is in the message).
        """
        from pyro.environments import service

        base_dir = (self._root.base if self._root is not None else None) or Path.cwd()
        spec_or_name = self._environment(spec_or_name)
        install = service.build(spec_or_name, progress=progress, base_dir=base_dir)
        return service.inspect(install.name)

    def push_environment(self, environment: str, ref: str, *, insecure: bool = False) -> str:
        """Push an installed environment to ``oci://REGISTRY/REPO:TAG``; returns the digest.

        Raises:
            RegistryError: the registry refused or could not be reached.
        """
        from pyro.environments import service

        return service.push(self._environment(environment), ref, insecure=insecure)

    def prune_environments(self) -> list[PrunedEntry]:
        """Remove invalid and superseded installs and stale temp dirs; say what went."""
        from pyro.environments import service

        return [
            PrunedEntry(path=str(item.path), reason=item.reason, size=item.size)
            for item in service.prune()
        ]
