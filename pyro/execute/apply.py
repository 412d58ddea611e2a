"""``apply(plan) -> RunResult``: carry out exactly the steps a plan names (contract §2).

Apply reads only the plan: host paths start at the plan's ``spec_dir``, a build uses the
Environment document the plan carries, and before anything is done every pinned digest
(environment content, build inputs, guest agent, copy-in sources) is checked against the
host, so a plan made elsewhere or earlier is refused with :class:`StalePlanError` naming
what changed rather than carried out against something else.

One small handler per step kind. The VM is recorded in the VM registry as owned by this
process, so a ``kill -9`` mid-run is cleaned up by the next pyro command; a normal error,
a timeout or Ctrl-C is cleaned up here, in ``finally``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.errors import BootError, PlanError, PyroError, SpecError, StalePlanError
from pyro.execute import transfer
from pyro.execute.prepare import build_folder, spec_dir
from pyro.execute.result import RunResult, StepResult, reported_step
from pyro.host import startslots
from pyro.machines.copyout import CopyBudget, CopyLimits
from pyro.machines.exec import OUTPUT_CAP, TIMEOUT_EXIT_CODE, Stdin, run_command
from pyro.machines.registry import BOOT_TIMEOUT_S, VMRecord, VMRegistry
from pyro.plan.model import (
    BootStep,
    BuildStep,
    CleanupStep,
    CopyInStep,
    CopyOutStep,
    ExecStep,
    Plan,
    PullStep,
)

if TYPE_CHECKING:
    from pyro.environments.cache.store import Install
    from pyro.environments.status import Progress
    from pyro.execute.pool import WarmPool
    from pyro.guest.client import AgentClient
    from pyro.machines.create import Shape

#: Caps on what one exec step keeps of its output (pyro.machines.exec).
STDOUT_CAP = STDERR_CAP = OUTPUT_CAP

EventSink = Callable[[str, str, Mapping[str, str]], None]
OutputSink = Callable[[str, bytes], None]
#: Told as each plan step begins: (its number from 1, how many steps, its id: "exec.hello").
StepSink = Callable[[int, int, str], None]


def _no_event(group: str, phase: str, fields: Mapping[str, str]) -> None:
    return None


@dataclass
class ApplyOptions:
    """How to carry a plan out; none of this changes *what* is done (the plan says that)."""

    artifacts_dir: Path | None = None
    """Where artifacts are copied to instead of the plan's ``spec_dir``: a confined caller's
    fresh folder (:meth:`pyro.host.confine.Root.output_folder`), so no spec target reaches
    its files."""
    on_event: EventSink = _no_event
    on_stdout: OutputSink | None = None
    on_stderr: OutputSink | None = None
    on_step: StepSink | None = None
    on_pull: Progress | None = None
    """Told of a pull or build step's bytes, phases and build lines."""
    registry: VMRegistry | None = None
    pool: WarmPool | None = None
    """Ready guests to take instead of restoring one (a long-lived host's; see pool.py)."""
    stdout_cap: int = STDOUT_CAP
    stderr_cap: int = STDERR_CAP
    stdin: Stdin | None = None
    """The stdin of the plan's first command (``run_in_vm``'s one command); the others,
    and every command of a spec, read ``/dev/null``."""


@dataclass
class _Run:
    plan: Plan
    options: ApplyOptions
    registry: VMRegistry
    started: float = field(default_factory=time.monotonic)
    install: Install | None = None
    vm_id: str | None = None
    client: AgentClient | None = None
    results: list[StepResult] = field(default_factory=list)
    failed_step: str | None = None
    stdin_taken: bool = False
    exit_code: int | None = 0
    timed_out: bool = False
    error: PyroError | None = None
    vm_kept: bool = False
    boot_mode: str | None = None
    copy_budget: CopyBudget | None = None
    """What all the run's artifacts may still write on the host (one cap per run)."""

    @property
    def deadline(self) -> float:
        return self.started + self.plan.timeout_seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def event(self, group: str, phase: str, **fields: str) -> None:
        self.options.on_event(group, phase, fields)


def apply(plan: Plan, options: ApplyOptions | None = None) -> RunResult:
    """Carry out ``plan`` and return what happened — also when a step fails.

    The plan's warnings are told to ``on_event`` first (``plan``, ``warning``) and kept in
    the result.

    Raises:
        PlanError: the plan is not applyable, builds an environment while builds are off
            (``$PYRO_NO_BUILD``), or has host paths but records no spec folder (nothing is
            done).
        StalePlanError: a pinned digest no longer matches (nothing is done); or, in the
            failed pull step's result, the registry now serves another manifest.
    """
    if not plan.applyable:
        first = plan.errors[0] if plan.errors else None
        raise PlanError(
            "the plan is not applyable" + (f": {first.message}" if first else ""),
            first.hint if first else "run 'pyro plan FILE' to see why",
        )
    build = next((s for s in plan.steps if isinstance(s, BuildStep)), None)
    if build is not None and _builds_forbidden():
        raise PlanError(
            f"the plan builds environment {build.ref} locally, but builds are off "
            "(--no-build, PYRO_NO_BUILD)",
            "install it first ('pyro env pull'), or make a new plan where its registry answers",
        )
    options = options or ApplyOptions()
    for warning in plan.warnings:
        options.on_event("plan", "warning", {"message": warning.message, "hint": warning.hint})
    if options.artifacts_dir is None and any(isinstance(s, CopyOutStep) for s in plan.steps):
        spec_dir(plan)  # artifacts need a folder to land in before anything boots
    run = _Run(plan=plan, options=options, registry=options.registry or VMRegistry())
    run.install = check_pins(plan)
    run.registry.reap()
    cleanup = next((s for s in plan.steps if isinstance(s, CleanupStep)), None)
    try:
        for number, step in enumerate(plan.steps, 1):
            if isinstance(step, CleanupStep):
                continue
            if run.failed_step is not None and not isinstance(step, CopyOutStep):
                run.results.append(
                    StepResult(
                        id=step.id,
                        action=step.action,
                        status="skipped",
                        name=getattr(step, "name", None),
                    )
                )
                continue
            _tell_step(run, number, step)
            _do_step(run, step)
    except KeyboardInterrupt:
        _cleanup(run, CleanupStep(id="cleanup", policy="always"), interrupted=True)
        raise
    finally:
        if run.client is not None:
            with contextlib.suppress(Exception):
                run.client.close()
    if cleanup is not None:
        _tell_step(run, plan.steps.index(cleanup) + 1, cleanup)
    _cleanup(run, cleanup or CleanupStep(id="cleanup", policy="always"), interrupted=False)
    return _result(run)


def _tell_step(run: _Run, number: int, step: Any) -> None:
    if run.options.on_step is not None:
        run.options.on_step(number, len(run.plan.steps), step.id)


def _builds_forbidden() -> bool:
    from pyro.environments.catalog import builds_forbidden  # only for plans that build

    return builds_forbidden()


def _do_step(run: _Run, step: Any) -> None:
    begun = time.monotonic()
    try:
        if isinstance(step, PullStep | BuildStep):
            _obtain(run, step)
            status = StepResult(id=step.id, action=step.action, status="ok")
        elif isinstance(step, BootStep):
            try:
                _boot(run, step)
            finally:  # unused by a pooled guest, or left by a failed boot
                startslots.release_process_slot()
            status = StepResult(
                id=step.id,
                action=step.action,
                status="ok",
                message=f"vm {run.vm_id} ({step.backend}, {run.boot_mode or step.mode})",
            )
        elif isinstance(step, CopyInStep):
            stats = _copy_in(run, step)
            status = StepResult(
                id=step.id,
                action=step.action,
                status="ok",
                message=f"{stats.files} file(s), {stats.bytes} bytes",
            )
        elif isinstance(step, ExecStep):
            status = _exec(run, step)
        elif isinstance(step, CopyOutStep):
            if run.client is None:
                status = StepResult(id=step.id, action=step.action, status="skipped")
            else:
                into = run.options.artifacts_dir or spec_dir(run.plan)
                stats = transfer.copy_out(
                    run.client, into, step.source, step.target, budget=_copy_budget(run)
                )
                status = StepResult(
                    id=step.id, action=step.action, status="ok", message=stats.summary()
                )
        else:  # pragma: no cover - the plan model admits no other step
            raise PlanError(f"unknown plan step {step!r}")
    except PyroError as exc:
        status = StepResult(
            id=step.id,
            action=step.action,
            status="error",
            name=getattr(step, "name", None),
            message=exc.summary,
        )
        run.error = run.error or exc
        run.failed_step = run.failed_step or step.id
        run.exit_code = None
    status.duration_ms = int((time.monotonic() - begun) * 1000)
    run.results.append(status)


def _copy_in(run: _Run, step: CopyInStep) -> transfer.TransferStats:
    """The copy-in the plan says: through the agent, or by the VM's spare disk (its
    guest may lack ``tar``: then through the agent)."""
    client = _client(run)
    if step.by == "disk":
        assert run.vm_id is not None
        record = run.registry.get(run.vm_id)
        stats = transfer.copy_in_by_disk(
            client,
            spec_dir(run.plan),
            step.source,
            step.target,
            record,
            run.registry.dir(run.vm_id),
        )
        if stats is not None:
            return stats
    return transfer.copy_in(client, spec_dir(run.plan), step.source, step.target)


def _copy_budget(run: _Run) -> CopyBudget:
    """The run's one copy-out budget, made at its first artifact: the byte, entry and
    depth caps hold for all the artifacts of the run together, not for each.

    Raises:
        UsageError: a ``$PYRO_COPY_OUT_MAX_*`` setting is not a number.
    """
    if run.copy_budget is None:
        run.copy_budget = CopyBudget(CopyLimits.from_env(), shared_by="all artifacts of this run")
    return run.copy_budget


def _client(run: _Run) -> AgentClient:
    if run.client is None:
        raise BootError("no running guest to talk to (the boot step did not run)")
    return run.client


def _obtain(run: _Run, step: PullStep | BuildStep) -> None:
    from pyro.environments import service

    env = run.plan.environment
    assert env is not None
    startslots.release_process_slot()  # a pull or a build waits on the network or disks
    run.event("pull", "install", environment=env.name)

    def progress(event: service.ProgressEvent) -> None:
        # A local build takes minutes: each of its phases is an event (on a terminal the
        # CLI shows it with the time since the build started).
        if event.phase == "build":
            run.event("pull", "building", environment=env.name, step=event.message)
        if run.options.on_pull is not None:
            run.options.on_pull(event)

    if isinstance(step, PullStep):
        install = service.pull(step.ref, progress=progress)
        if step.digest is not None and install.source_digest not in (None, step.digest):
            raise StalePlanError(
                f"{step.ref} now resolves to {install.source_digest}, not {step.digest} as planned"
            )
    else:
        # By the document's own name, which is a catalog name: its inputs are in the folder
        # the plan names, whatever the spec file that held it says now.
        install = service.build(
            step.document.metadata.name,
            spec=step.document,
            base_dir=build_folder(run.plan, step),
            progress=progress,
        )
    run.install = install
    run.event("pull", "ready", environment=env.name)


def _installed(run: _Run) -> Install:
    if run.install is not None:
        return run.install
    env = run.plan.environment
    assert env is not None
    return _pinned_install(env.name, None)


# --- pinned digests ---------------------------------------------------------------------


def check_pins(plan: Plan) -> Install | None:
    """Check every digest ``plan`` pins against this host, before anything is done; the
    install the boot step will use when the plan found the environment installed.

    Raises:
        StalePlanError: the guest agent's sources, the installed environment's content, an
            Environment build's inputs or a copy-in source differ from what the plan pinned.
        PlanError: the plan has host paths but records no spec folder.
    """
    install = None
    for step in plan.steps:
        if isinstance(step, BuildStep):
            _check_build(plan, step)
        elif isinstance(step, BootStep):
            _check_agent(step)
            env = plan.environment
            if env is not None and env.origin == "installed":
                install = _pinned_install(env.name, step.environment_digest)
        elif isinstance(step, CopyInStep):
            _check_source(plan, step)
    return install


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:19] + "…"


def _pinned_install(name: str, content: str | None) -> Install:
    from pyro.environments.cache.store import Cache

    install = Cache().lookup(name)
    if install is None:
        raise StalePlanError(
            f"environment {name} is no longer installed (the plan found it installed)",
            f"install it again with 'pyro env pull {name}', or make a new plan with "
            "'pyro plan FILE --json' and apply that",
        )
    if content is not None and install.content_digest != content:
        raise StalePlanError(
            f"environment {name} now holds other content: kernel and rootfs digest "
            f"{_short(install.content_digest)}, not {_short(content)} as planned",
            "it was pulled or built again since the plan was made: make a new plan with "
            "'pyro plan FILE --json' and apply that",
        )
    return install


def _check_agent(step: BootStep) -> None:
    from pyro.guest.build import agent_source_digest

    now = agent_source_digest()
    if step.agent_digest is not None and step.agent_digest != now:
        raise StalePlanError(
            f"the guest agent changed since the plan was made: its sources are "
            f"{_short(now)}, not {_short(step.agent_digest)} as planned",
            "the plan was made by another pyro version: make a new plan with "
            "'pyro plan FILE --json' with this one and apply that",
        )


def _check_build(plan: Plan, step: BuildStep) -> None:
    from pyro.environments.catalog import spec_digest

    folder = build_folder(plan, step)
    try:
        now = spec_digest(step.document, folder)
    except SpecError as exc:
        raise StalePlanError(
            f"cannot check the build inputs of {step.ref}: {exc.summary}",
            f"restore the file (relative to {folder}), or make a new plan with "
            "'pyro plan FILE --json' and apply that",
        ) from exc
    if now != step.spec_digest:
        raise StalePlanError(
            f"the build inputs of environment {step.ref} changed since the plan was made "
            f"(document, kernel fragment in {folder} or builder version): "
            f"{_short(now)}, not {_short(step.spec_digest)} as planned",
            "make a new plan with 'pyro plan FILE --json' and apply that",
        )


def _check_source(plan: Plan, step: CopyInStep) -> None:
    folder = spec_dir(plan)
    now = transfer.source_digest(folder, step.source)
    if now == step.digest:
        return
    if now is None:
        change = "is gone or can no longer be copied"
    elif step.digest is None:
        change = "did not exist (or could not be copied) when the plan was made"
    else:
        change = f"changed: {_short(now)}, not {_short(step.digest)} as planned"
    raise StalePlanError(
        f"copy-in source {step.source!r} (in {folder}) {change}",
        "make a new plan with 'pyro plan FILE --json' and apply that",
    )


def _boot(run: _Run, step: BootStep) -> None:
    from pyro.machines.create import shape_of
    from pyro.net.policy import NetworkConfig

    env = run.plan.environment
    assert env is not None and step.backend is not None
    install = _installed(run)
    shape = shape_of(
        install,
        environment=env.name,
        backend=step.backend,
        vcpus=step.vcpus,
        memory_mib=step.memory_mib,
        network=NetworkConfig.from_dict(step.network.model_dump(mode="json")),
    )
    keep = (
        run.plan.steps[-1].policy != "always"
        if isinstance(run.plan.steps[-1], CleanupStep)
        else False
    )
    if _take_pooled(run, step, shape, keep=keep):
        return
    with startslots.start_slot() as slot:
        if slot.waited_s >= 0.001:
            run.event(
                "run",
                "start-slot",
                waited_ms=str(round(slot.waited_s * 1000)),
                status="held" if slot.held else "none-free",
            )
        _create_and_start(run, step, shape, keep=keep)


def _create_and_start(run: _Run, step: BootStep, shape: Shape, *, keep: bool) -> None:
    from pyro.machines.create import create

    run.event("run", "create", environment=shape.environment)
    record = create(run.registry, shape, ephemeral=True, vmm_outlives_owner=keep)
    run.vm_id = record.id
    run.event("run", "start", vm_id=record.id)
    timeout = min(BOOT_TIMEOUT_S, max(1.0, run.remaining()))
    run.boot_mode, run.client = _start(run, step, record, keep=keep, timeout=timeout)


def _take_pooled(run: _Run, step: BootStep, shape: Shape, *, keep: bool) -> bool:
    """Serve a ``restore`` boot from the warm pool when it holds a guest of this shape."""
    if run.options.pool is None:
        return False
    from pyro.execute.pool import take_for_boot

    pooled = take_for_boot(run.options.pool, shape, step, keep=keep)
    if pooled is None:
        return False
    run.event("run", "create", environment=shape.environment)
    run.vm_id, run.client, run.boot_mode = pooled.vm_id, pooled.client, "pooled"
    run.event("run", "start", vm_id=pooled.vm_id)
    return True


def _start(
    run: _Run, step: BootStep, record: VMRecord, *, keep: bool, timeout: float
) -> tuple[str, AgentClient]:
    """Restore a saved guest when the plan says so, else boot cold (and save one)."""
    from pyro.execute import warm
    from pyro.vmm.snapshot import restorable, warm_enabled

    allowed = warm_enabled() and restorable(
        network_policy=step.network.policy, publish=bool(step.network.publish), kept=keep
    )
    if not allowed:
        _, client = run.registry.start(record.id, boot_timeout=timeout)
        return "cold", client

    def note(status: str, reason: str) -> None:
        fields = {"reason": reason} if reason else {}
        run.event("run", "snapshot", vm_id=record.id, status=status, **fields)

    return warm.start(
        run.registry,
        record,
        restore=step.mode == "restore",
        save=True,
        boot_timeout=timeout,
        event=note,
    )


def _exec(run: _Run, step: ExecStep) -> StepResult:
    client = _client(run)
    assert run.vm_id is not None
    run.event("run", "execute", vm_id=run.vm_id)
    remaining = run.remaining()
    if remaining <= 0:
        run.timed_out = True
        run.failed_step = run.failed_step or step.id
        run.exit_code = TIMEOUT_EXIT_CODE
        return StepResult(
            id=step.id,
            action="exec",
            name=step.name,
            status="timed-out",
            exit_code=TIMEOUT_EXIT_CODE,
            message="the run's timeout was reached",
        )
    limit = remaining if step.timeout_seconds is None else min(step.timeout_seconds, remaining)
    on_out, on_err = run.options.on_stdout, run.options.on_stderr
    out = run_command(
        client,
        run.vm_id,
        step.argv,
        env=step.env,
        cwd=step.cwd,
        timeout_s=limit,
        stdout_cap=run.options.stdout_cap,
        stderr_cap=run.options.stderr_cap,
        on_stdout=(lambda data: on_out(step.id, data)) if on_out else None,
        on_stderr=(lambda data: on_err(step.id, data)) if on_err else None,
        stdin=None if run.stdin_taken else run.options.stdin,
    )
    run.stdin_taken = True  # one command reads it
    code = out.exit_code
    if out.timed_out:
        status = "timed-out"
        run.timed_out = True
    else:
        status = "ok" if code == 0 else "failed"
    outcome = StepResult(
        id=step.id,
        action="exec",
        name=step.name,
        status=status,
        exit_code=code,
        signal=out.signal,
        stdout=out.stdout,
        stderr=out.stderr,
        stdout_truncated=out.stdout_truncated,
        stderr_truncated=out.stderr_truncated,
    )
    if status != "ok" and not (step.continue_on_error and status == "failed"):
        run.failed_step = run.failed_step or step.id
        run.exit_code = code
    return outcome


def _cleanup(run: _Run, step: CleanupStep, *, interrupted: bool) -> None:
    if run.vm_id is None:
        return
    success = run.failed_step is None
    keep = not interrupted and (
        step.policy == "never" or (step.policy == "on-success" and not success)
    )
    if keep:
        run.registry.disown(run.vm_id)
        run.vm_kept = True
        return
    run.event("run", "cleanup", vm_id=run.vm_id)
    run.registry.delete(run.vm_id)


def _result(run: _Run) -> RunResult:
    env = run.plan.environment
    boot = next((s for s in run.plan.steps if isinstance(s, BootStep)), None)
    ok = run.failed_step is None and run.error is None
    shown = reported_step(run.results, run.failed_step)
    return RunResult(
        ok=ok,
        name=run.plan.metadata.name,
        plan_digest=run.plan.digest,
        environment=env.name if env else None,
        environment_digest=(
            run.install.content_digest if run.install else (env.digest if env else None)
        ),
        backend=boot.backend if boot else None,
        vm_id=run.vm_id,
        vm_kept=run.vm_kept,
        exit_code=0 if ok else run.exit_code,
        stdout=shown.stdout if shown else "",
        stderr=shown.stderr if shown else "",
        timed_out=run.timed_out,
        failed_step=run.failed_step,
        error=run.error.to_dict() if run.error else None,
        duration_ms=int((time.monotonic() - run.started) * 1000),
        steps=run.results,
        warnings=list(run.plan.warnings),
    )
