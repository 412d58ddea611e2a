"""Flags and settings in the terms a user typed them: ranges, backends, ``PYRO_BACKEND``.

A flag's bounds are the Run spec's own (:mod:`pyro.spec.limits`), so ``--vcpus 0`` is refused
by click as a bad ``--vcpus`` before anything runs, not later as a spec error. What only
the spec loader can check (an environment reference, ``--env`` names) is mapped back to
the flag that carried it by :func:`flag_error`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import click

from pyro.errors import SpecError, UsageError
from pyro.spec import limits

BACKEND_ENV = "PYRO_BACKEND"

#: Where ``pyro run``'s flags land in the Run spec it builds (pyro.spec.command).
RUN_FLAGS: Mapping[str, str] = {
    "/spec/environment": "ENVIRONMENT",
    "/spec/resources/vcpus": "--vcpus",
    "/spec/resources/memoryMiB": "--memory-mib",
    "/spec/timeoutSeconds": "--timeout-seconds",
    "/spec/network": "--network",
    "/spec/backend": "--backend",
    "/spec/env": "--env",
    "/spec/steps/0": "COMMAND",
}


#: Guest vCPUs, as a Run spec's ``resources.vcpus`` allows.
VCPUS = click.IntRange(*limits.VCPUS)
#: Guest memory in MiB, as a Run spec's ``resources.memoryMiB`` allows.
MEMORY_MIB = click.IntRange(*limits.MEMORY_MIB)
#: A timeout in seconds, as a Run spec's ``timeoutSeconds`` allows.
TIMEOUT_SECONDS = click.IntRange(*limits.TIMEOUT_SECONDS)
#: A lifetime in seconds (``--ttl-seconds``, ``--idle-timeout-seconds``).
POSITIVE_SECONDS = click.IntRange(min=1)


#: The ``--backend`` flag's type: the Run spec's ``backend`` values.
BACKENDS = click.Choice(limits.BACKENDS)


def check_backend_env() -> None:
    """Refuse a ``PYRO_BACKEND`` no backend answers to (empty means unset).

    Raises:
        UsageError: ``PYRO_BACKEND`` holds something else than a backend name.
    """
    value = os.environ.get(BACKEND_ENV)
    if not value:
        return
    names = limits.BACKENDS
    if value not in names:
        raise UsageError(
            f"{BACKEND_ENV} is {value!r}, which is not a backend; it must be one of: "
            + ", ".join(names),
            f"set {BACKEND_ENV} to one of those, or unset it (auto picks the best one here)",
        )


def flag_error(error: SpecError, flags: Mapping[str, str], command: str) -> UsageError | None:
    """``error`` (from validating the spec a command built from its flags) in flag terms,
    or None when no issue of it comes from a flag (e.g. a spec file ENVIRONMENT names)."""
    from pyro.spec.load import DEFAULT_NAME  # what an in-memory spec's issues name as file

    for issue in error.issues:
        if issue.file not in (None, DEFAULT_NAME):
            continue
        for pointer, flag in flags.items():
            if issue.pointer == pointer or issue.pointer.startswith(pointer + "/"):
                details = []
                if issue.expected is not None:
                    details.append(f"expected {issue.expected}")
                if issue.found is not None:
                    details.append(f"found {issue.found}")
                text = f"{flag}: {issue.message}" + (f" ({'; '.join(details)})" if details else "")
                return UsageError(text, f"see '{command} --help'")
    return None
