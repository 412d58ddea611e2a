"""Spec documents: models, the one loader, JSON Schema export. Pure: no I/O but reading specs."""

from __future__ import annotations

from pyro.spec.load import (
    LoadedSpec,
    load_spec,
    load_spec_data,
    load_spec_documents,
    load_spec_text,
    load_vars_file,
    render_template,
)
from pyro.spec.model import KINDS, AnySpec, EnvironmentSpec, RunSpec

__all__ = [
    "KINDS",
    "AnySpec",
    "EnvironmentSpec",
    "LoadedSpec",
    "RunSpec",
    "load_spec",
    "load_spec_data",
    "load_spec_documents",
    "load_spec_text",
    "load_vars_file",
    "render_template",
]
