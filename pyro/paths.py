"""Where pyro keeps things on the host: cache (environments, kernels, agent), state (VMs, tasks)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PYRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/pyro``, else ``~/.cache/pyro``."""
    explicit = os.environ.get("PYRO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().absolute() / "pyro"


def state_dir() -> Path:
    """``$PYRO_STATE_DIR``, else ``$XDG_STATE_HOME/pyro``, else ``~/.local/state/pyro``."""
    explicit = os.environ.get("PYRO_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser().absolute() / "pyro"
