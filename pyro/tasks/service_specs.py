"""Service definitions as stored with a task (``services.json`` in its directory): what
``pyro task service restart`` starts again and ``task status`` lists. Pure storage: no guest.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError

from pyro import paths
from pyro.errors import StateError, UsageError

FILE = "services.json"
#: The most definitions a task keeps: as many processes as its agent runs at once. Without
#: it, starting new names across reboots (which empty the agent's table) grew the file.
MAX_SERVICES = 32


class Readiness(BaseModel):
    """When a service counts as up: a TCP port answers, an HTTP path on it answers < 400, or
    a command exits 0 (``sh -c``, in the service's directory)."""

    port: int | None = None
    http_path: str | None = None
    command: str | None = None
    timeout_seconds: float = 60.0

    def describe(self) -> str:
        if self.http_path is not None:
            return f"HTTP GET 127.0.0.1:{self.port}{self.http_path} < 400"
        if self.port is not None:
            return f"TCP port {self.port} accepts connections"
        return f"'{self.command}' exits 0"


class ServiceSpec(BaseModel):
    """A service's definition, as stored with the task."""

    name: str
    argv: list[str]
    env: dict[str, str] = {}
    cwd: str
    readiness: Readiness | None = None
    created_at: float
    started_at: float | None = None
    restarts: int = 0
    stopped: bool = False


_SPECS = TypeAdapter(dict[str, ServiceSpec])


def load_specs(task_dir: Path, task_id: str) -> dict[str, ServiceSpec]:
    """The definitions by name (none when the file is missing).

    Raises:
        StateError: the file is unreadable.
    """
    try:
        return _SPECS.validate_json((task_dir / FILE).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValidationError) as exc:
        raise StateError(
            f"the service definitions of task {task_id} are unreadable: {exc}",
            f"remove {task_dir / FILE} and start the services again",
        ) from exc


def check_room(specs: dict[str, ServiceSpec], name: str, task_id: str) -> None:
    """Raises: UsageError: ``name`` would be a definition past :data:`MAX_SERVICES`."""
    if name in specs or len(specs) < MAX_SERVICES:
        return
    ended = sorted(n for n, spec in specs.items() if spec.stopped) or sorted(specs)
    shown = ", ".join(ended[:5]) + (", ..." if len(ended) > 5 else "")
    raise UsageError(
        f"task {task_id} has {len(specs)} service definitions, the most it keeps",
        f"start one of its names again to replace that definition ({shown}); "
        "'pyro task service list' shows them",
    )


def save_spec(task_dir: Path, task_id: str, spec: ServiceSpec) -> None:
    """Store (or replace) one definition; the caller holds the task's lock.

    Raises:
        UsageError: a new name past :data:`MAX_SERVICES`.  StateError: the file is unreadable.
    """
    specs = load_specs(task_dir, task_id)
    check_room(specs, spec.name, task_id)
    specs[spec.name] = spec
    paths.write_private(task_dir / FILE, _SPECS.dump_json(specs, indent=2).decode())


def service_names(task_dir: Path) -> list[str]:
    """Names of the services defined in a task directory (for ``task status``)."""
    with contextlib.suppress(OSError, ValidationError):
        return sorted(_SPECS.validate_json((task_dir / FILE).read_bytes()))
    return []


def copy_specs(source_dir: Path, target_dir: Path) -> None:
    """Give a fork its source's definitions: a fork from memory runs the same services (its
    agent's processes are copies), a cold one can ``restart`` them."""
    with contextlib.suppress(FileNotFoundError):
        paths.write_private(target_dir / FILE, (source_dir / FILE).read_text())
