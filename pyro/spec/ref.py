"""Environment references: catalog name, spec path, or oci:// reference (pure)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cache

CATALOG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}(:[a-z0-9][a-z0-9._-]{0,62})?$")
# registry host[:port], then repository path components, optional tag, optional digest.
# Compiled on first use (_oci_re): compiling it is a noticeable part of `pyro plan`'s
# start-up, and most plans name no oci:// reference.
OCI_PATTERN = (
    r"^oci://"
    r"(?P<registry>(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?)"
    r"/(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@cache
def _oci_re() -> re.Pattern[str]:
    return re.compile(OCI_PATTERN)


# The same rules as JSON Schema (ECMA-262) patterns, for the generated schemas: no named
# groups, and the registry port range written out (parse_environment_ref checks it in code).
_PORT_SCHEMA = (
    "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
OCI_SCHEMA_PATTERN = re.sub(r"\(\?P<\w+>", "(?:", OCI_PATTERN).replace("[0-9]{1,5}", _PORT_SCHEMA)
ENVIRONMENT_SCHEMA_PATTERN = (
    f"^(?:{OCI_SCHEMA_PATTERN[1:-1]}"
    r"|(?!.*://)(?:[^\x00]*/[^\x00]*|[^\x00]*\.ya?ml)"
    f"|{CATALOG_RE.pattern[1:-1]})$"
)


@dataclass(frozen=True)
class CatalogRef:
    """A name from pyro's environment catalog, e.g. ``debian:12``."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class SpecPathRef:
    """A path to an Environment spec file, relative to the referring spec's folder."""

    path: str

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class OciRef:
    """An OCI artifact reference ``oci://registry/repository[:tag][@sha256:...]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def target(self) -> str:
        """The reference without scheme, as oras expects it."""
        ref = f"{self.registry}/{self.repository}"
        if self.digest:
            return f"{ref}@{self.digest}"
        return f"{ref}:{self.tag or 'latest'}"

    @property
    def is_loopback(self) -> bool:
        """``localhost`` or a loopback IP address (``127.evil.example`` is a DNS name: no)."""
        if self.registry.startswith("["):
            host = self.registry[1:].split("]", 1)[0]
        else:
            host = self.registry.rsplit(":", 1)[0]
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        text = f"oci://{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


EnvironmentRef = CatalogRef | SpecPathRef | OciRef


def parse_environment_ref(value: str) -> EnvironmentRef:
    """Parse an environment reference.

    Raises:
        ValueError: the value is none of the three accepted forms.
    """
    if value.startswith("oci://"):
        match = _oci_re().match(value)
        if not match:
            raise ValueError(
                "is not a valid OCI reference (expected oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX64])"
            )
        port = match["registry"].rsplit(":", 1)
        if len(port) == 2 and port[1].isdigit() and not 0 < int(port[1]) < 65536:
            raise ValueError("has a registry port outside 1-65535")
        return OciRef(match["registry"], match["repository"], match["tag"], match["digest"])
    if "://" in value:
        raise ValueError("uses an unknown scheme (only oci:// is supported)")
    if "/" in value or value.endswith((".yaml", ".yml")):
        if "\x00" in value:
            raise ValueError("must not contain NUL bytes")
        return SpecPathRef(value)
    if CATALOG_RE.match(value):
        return CatalogRef(value)
    raise ValueError(
        "is not a catalog name (like debian:12), a path to an Environment spec,"
        " or an oci:// reference"
    )
