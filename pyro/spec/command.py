"""The Run spec of one command in a fresh VM (``pyro run ENV -- CMD``, ``Pyro.run_in_vm``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

#: The network policies of one command (an allowlist needs its list: write a Run spec).
CommandNetwork = Literal["off", "egress"]
#: The VMM backends a caller may ask for (the values of ``spec.backend``).
BackendName = Literal["auto", "qemu-tcg", "qemu-kvm", "firecracker"]


def run_spec_for_command(
    environment: str,
    command: str | Sequence[str],
    *,
    vcpus: int | None = None,
    memory_mib: int | None = None,
    timeout_seconds: int = 600,
    network: CommandNetwork = "off",
    env: Mapping[str, str] | None = None,
    backend: BackendName | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """The Run spec (as data) of one command in a fresh VM; validated like any spec."""
    step: dict[str, Any] = {"name": "command"}
    if isinstance(command, str):
        step["run"] = command
    else:
        step["argv"] = list(command)
    if cwd:
        step["cwd"] = cwd
    resources = {k: v for k, v in (("vcpus", vcpus), ("memoryMiB", memory_mib)) if v is not None}
    body: dict[str, Any] = {
        "environment": environment,
        "timeoutSeconds": timeout_seconds,
        "network": {"policy": network},
        "steps": [step],
    }
    if resources:
        body["resources"] = resources
    if env:
        body["env"] = dict(env)
    if backend:
        body["backend"] = backend
    return {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "run"}, "spec": body}
