"""pyro: run commands inside ephemeral microVMs, from declarative specs.

The public Python API::

    from pyro import Pyro
    result = Pyro().run_in_vm("debian:12", "git --version")

Heavy modules are imported on first use, so ``import pyro`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyro import errors
from pyro.__about__ import __version__

if TYPE_CHECKING:
    from pyro.sdk import Pyro
    from pyro.spec.load import LoadedSpec

__all__ = ["Pyro", "__version__", "apply", "errors", "load_spec", "plan"]


def load_spec(source: Any, *, vars: Any = None) -> LoadedSpec:
    """Load and validate one spec document (path, mapping or model). Raises SpecError."""
    from pyro.spec.load import load_spec as _load

    return _load(source, vars=vars)


def plan(spec_or_path: Any, *, vars: Any = None) -> Any:
    """Plan a Run spec; see :meth:`Pyro.plan`."""
    from pyro.sdk import Pyro

    return Pyro().plan(spec_or_path, vars=vars)


def apply(spec_or_plan: Any, *, vars: Any = None) -> Any:
    """Plan (unless given a Plan) and apply a Run spec; see :meth:`Pyro.apply`."""
    from pyro.sdk import Pyro

    return Pyro().apply(spec_or_plan, vars=vars)


def __getattr__(name: str) -> Any:
    if name == "Pyro":
        from pyro.sdk import Pyro

        return Pyro
    raise AttributeError(f"module 'pyro' has no attribute {name!r}")
