"""OCI registries: reference helpers and the oras adapter (pull/push with digest checks)."""

from __future__ import annotations

from pyro.oci.reference import parse_oci_ref, pinned, resolve

__all__ = ["parse_oci_ref", "pinned", "resolve"]
