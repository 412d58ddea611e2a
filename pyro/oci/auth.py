"""Registry credentials: environment variables first, then docker's config.json ``auths``.

Anonymous access is the default; nothing here ever prompts or writes credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pyro.errors import RegistryError


@dataclass(frozen=True)
class Credentials:
    """A username and password for HTTP basic auth (or a registry's token endpoint)."""

    username: str
    password: str
    origin: str

    def __repr__(self) -> str:  # never show the password in logs or tracebacks
        return f"Credentials(username={self.username!r}, origin={self.origin!r})"


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def credentials_for(registry: str) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]), or None for anonymous access.

    ``PYRO_REGISTRY_USERNAME``/``PYRO_REGISTRY_PASSWORD`` win over docker's config.

    Raises:
        RegistryError: only one of the two variables is set, or the docker config is
            unreadable or holds a malformed ``auth`` entry for this registry.
    """
    user = os.environ.get("PYRO_REGISTRY_USERNAME")
    password = os.environ.get("PYRO_REGISTRY_PASSWORD")
    if user or password:
        if not (user and password):
            raise RegistryError(
                "only one of PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD is set",
                "set both, or neither for anonymous access",
            )
        return Credentials(user, password, "environment")
    return _from_docker_config(registry, docker_config_path())


def _from_docker_config(registry: str, path: Path) -> Credentials | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"cannot read docker credentials from {path}: {exc}",
            "fix or remove that file, or set PYRO_REGISTRY_USERNAME/PYRO_REGISTRY_PASSWORD",
        ) from exc
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v2/"):
        entry = auths.get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            return _decode(str(entry["auth"]), registry, path)
    return None


def _decode(value: str, registry: str, path: Path) -> Credentials:
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RegistryError(
            f"the docker credentials for {registry} in {path} are not valid base64",
            f"run 'docker login {registry}' again",
        ) from exc
    if not sep or not user:
        raise RegistryError(
            f"the docker credentials for {registry} in {path} are not USER:PASSWORD",
            f"run 'docker login {registry}' again",
        )
    return Credentials(user, password, str(path))
