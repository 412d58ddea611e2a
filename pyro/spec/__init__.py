"""Spec documents: models, the one loader, JSON Schema export. Pure: no I/O but reading specs.

Names are resolved on first use, so ``from pyro.spec.model import RunSpec`` (the run path)
does not pay for the YAML loader and the template engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyro.lazy import lazy_attributes

if TYPE_CHECKING:
    from pyro.spec.environment import KINDS, AnySpec, EnvironmentSpec
    from pyro.spec.load import (
        LoadedSpec,
        load_spec,
        load_spec_data,
        load_spec_documents,
        load_spec_text,
        load_vars_file,
        render_template,
    )
    from pyro.spec.model import RunSpec

_HOMES = {
    "KINDS": "pyro.spec.environment",
    "AnySpec": "pyro.spec.environment",
    "EnvironmentSpec": "pyro.spec.environment",
    "RunSpec": "pyro.spec.model",
    "LoadedSpec": "pyro.spec.load",
    "load_spec": "pyro.spec.load",
    "load_spec_data": "pyro.spec.load",
    "load_spec_documents": "pyro.spec.load",
    "load_spec_text": "pyro.spec.load",
    "load_vars_file": "pyro.spec.load",
    "render_template": "pyro.spec.load",
}

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


__getattr__ = lazy_attributes(__name__, _HOMES)
