"""Human rendering of a :class:`Plan`: one line per step, each with an ASCII action symbol.

Pure and deterministic (snapshot-tested). The JSON rendering lives in :mod:`pyro.plan.model`
(:func:`~pyro.plan.model.render_json`) and is re-exported here.
"""

from __future__ import annotations

import shlex

from pyro.plan.model import (
    BootStep,
    BuildStep,
    CleanupStep,
    CopyInStep,
    CopyOutStep,
    ExecStep,
    Plan,
    PullStep,
    render_json,
)

__all__ = ["SYMBOLS", "render_json", "render_text"]

# ASCII so the rendering survives any terminal, log file and CI viewer.
SYMBOLS: dict[str, str] = {
    "pull": "+",
    "build": "~",
    "boot": ">",
    "copy-in": "^",
    "exec": "$",
    "copy-out": "v",
    "cleanup": "-",
}
LEGEND = "legend: " + "  ".join(f"{symbol} {action}" for action, symbol in SYMBOLS.items())
_MAX_COMMAND = 72


def _short(digest: str | None) -> str:
    if digest is None:
        return "unknown digest"
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}"


def _command(argv: list[str]) -> str:
    text = shlex.join(argv).replace("\n", "\\n")
    return text if len(text) <= _MAX_COMMAND else text[: _MAX_COMMAND - 3] + "..."


def _describe(
    step: PullStep | BuildStep | BootStep | CopyInStep | ExecStep | CopyOutStep | CleanupStep,
) -> str:
    if isinstance(step, PullStep):
        return f"{step.ref} ({_short(step.digest)})"
    if isinstance(step, BuildStep):
        return f"{step.ref} (spec {_short(step.spec_digest)})"
    if isinstance(step, BootStep):
        network: str = step.network.policy
        if step.network.publish:
            network += " publish " + ",".join(
                f"{p['host']}:{p['guest']}" for p in step.network.publish
            )
        return (
            f"{step.backend or '(no backend)'} vcpus={step.vcpus} memory={step.memory_mib}MiB "
            f"network={network} {step.mode}"
        )
    if isinstance(step, CopyInStep):
        return f"{step.source} -> {step.target}"
    if isinstance(step, ExecStep):
        extras = []
        if step.cwd:
            extras.append(f"cwd={step.cwd}")
        if step.timeout_seconds is not None:
            extras.append(f"timeout={step.timeout_seconds}s")
        if step.continue_on_error:
            extras.append("continue-on-error")
        suffix = f"  [{' '.join(extras)}]" if extras else ""
        return _command(step.argv) + suffix
    if isinstance(step, CopyOutStep):
        return f"{step.source} -> {step.target}"
    return step.policy


def render_text(plan: Plan) -> str:
    """A short human rendering: header, one line per step, errors and warnings with hints,
    verdict, legend."""
    env = plan.environment
    if env is None:
        what = "environment unresolved"
    else:
        version = f" {env.version}" if env.version else ""
        what = f"{env.ref} ({env.name}{version}, {env.origin})"
    backend = plan.inventory.backend
    where = f" on {backend}" if backend else ", no usable backend"
    lines = [f"plan {plan.metadata.name}: {what}{where}, timeout {plan.timeout_seconds}s"]
    width = max(len(step.id) for step in plan.steps)
    for step in plan.steps:
        lines.append(f"  {SYMBOLS[step.action]} {step.id.ljust(width)}  {_describe(step)}")
    if plan.errors:
        lines.append(f"errors ({len(plan.errors)}):")
        for issue in plan.errors:
            where = f" at {issue.pointer}" if issue.pointer else ""
            lines.append(f"  {issue.code}{where}: {issue.message}")
            lines.append(f"    hint: {issue.hint}")
    if plan.warnings:
        lines.append(f"warnings ({len(plan.warnings)}):")
        for issue in plan.warnings:
            lines.append(f"  {issue.code}: {issue.message}")
            lines.append(f"    hint: {issue.hint}")
    lines.append(f"applyable: {'yes' if plan.applyable else 'no'}")
    lines.append(f"digest: {plan.digest}")
    lines.append(LEGEND)
    return "\n".join(lines) + "\n"
