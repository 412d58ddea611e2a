"""``oci://`` reference helpers on top of :mod:`pyro.spec.ref` (parsing stays pure there)."""

from __future__ import annotations

import dataclasses

from pyro.errors import UsageError
from pyro.spec.ref import OciRef, parse_environment_ref


def parse_oci_ref(value: str) -> OciRef:
    """Parse ``oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]``.

    Raises:
        UsageError: ``value`` is not a valid oci:// reference.
    """
    try:
        ref = parse_environment_ref(value)
    except ValueError as exc:
        raise UsageError(
            f"{value!r} {exc}", "write oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX64]"
        ) from exc
    if not isinstance(ref, OciRef):
        raise UsageError(
            f"{value!r} is not an oci:// reference",
            "write oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX64]",
        )
    return ref


def pinned(ref: OciRef, digest: str) -> OciRef:
    """``ref`` with its manifest digest filled in (the tag is kept for readability)."""
    return dataclasses.replace(ref, digest=digest)


def resolve(ref: OciRef | str, *, insecure: bool = False) -> str:
    """The manifest digest ``ref`` currently points at (asks the registry).

    Raises:
        UsageError: ``ref`` is a string that is not an oci:// reference.
        RegistryError: the registry cannot be reached, refuses, or has no such tag.
    """
    from pyro.oci.client import RegistryClient  # keeps requests/oras off the pure import path

    parsed = parse_oci_ref(ref) if isinstance(ref, str) else ref
    if parsed.digest is not None:
        return parsed.digest
    return RegistryClient(parsed, insecure=insecure).resolve()
