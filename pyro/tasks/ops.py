"""The task operations that touch the guest: create (boot + seed + baseline), exec, snapshots."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from pyro.errors import NotFoundError, PyroError, StateError, UsageError
from pyro.machines import datadisk, pushdisk
from pyro.machines.exec import ExecOutput, Stdin, argv_of, run_command
from pyro.machines.registry import VMRecord, VMState
from pyro.tasks.files import (
    WORKSPACE,
    TreePlan,
    guest_path,
    run_checked,
    scan_tree,
    tree_entries,
    tree_result,
    upload_tree,
)
from pyro.tasks.journal import cap_text
from pyro.tasks.manager import TaskInfo, TaskManager, TaskMeta
from pyro.tasks.network import PublishItem, network_config
from pyro.tasks.secrets import Redactor, SecretStore, StreamRedactor, check_secret
from pyro.tasks.snapshots import (
    BASELINE,
    SnapshotInfo,
    apply_offline,
    check_name,
    create_offline,
    create_online,
    delete_offline,
    delete_online,
    require_qemu,
)

if TYPE_CHECKING:
    from pyro.vmm.base import Backend, VMHandle


class TaskExecOutput(ExecOutput):
    """One command of a task (redacted), with its journal sequence number."""

    task_id: str
    seq: int


class TaskCreateOptions(BaseModel):
    """Everything ``create_task`` takes besides the environment."""

    seed_path: str | None = None
    name: str | None = None
    labels: dict[str, str] = {}
    vcpus: int | None = None
    memory_mib: int | None = None
    ttl_seconds: int | None = None
    idle_timeout_seconds: int | None = None
    idle_action: str = "stop"
    backend: str | None = None
    network: str = "off"
    allow: list[str] = []
    publish: list[PublishItem] = []
    """Published ports, (host, guest) pairs or ``"HOST:GUEST"`` (:mod:`pyro.tasks.network`)."""


def create(
    manager: TaskManager,
    environment: str,
    options: TaskCreateOptions,
    secrets: Mapping[str, str],
) -> TaskInfo:
    """Record, boot and seed a task; on any failure nothing of it is left.

    Raises:
        UsageError: a bad secret, seed folder, name, label or network policy.
        LimitError: seed too large, host limits.  NetworkError: a published host port is
            taken (or below 1024 for a user who is not root).
        EnvironmentNotFoundError, BackendUnavailableError, BootError, GuestError.
    """
    from pyro.machines.create import check_resources, resolve
    from pyro.machines.create import create as create_vm
    from pyro.net.ports import check_ports_free
    from pyro.tasks.update import check_labels, check_name

    for name, value in secrets.items():
        check_secret(name, value)
    if options.name is not None:
        check_name(options.name)
    check_labels(options.labels)
    network = network_config(options.network, options.allow, options.publish)
    check_ports_free(host for host, _ in network.publish)  # again as the VMM starts
    check_resources(vcpus=options.vcpus, memory_mib=options.memory_mib)
    _check_range("ttl_seconds", options.ttl_seconds, 1, None)
    _check_range("idle_timeout_seconds", options.idle_timeout_seconds, 1, None)
    if options.idle_action not in ("stop", "pause"):
        raise UsageError(
            f"idle action {options.idle_action!r} is not known", "use 'stop' or 'pause'"
        )
    # Scan the seed first: a bad folder is refused before anything boots.
    plan = scan_tree(Path(options.seed_path)) if options.seed_path else None
    shape = resolve(
        environment,
        backend=options.backend,
        vcpus=options.vcpus,
        memory_mib=options.memory_mib,
    )
    record = create_vm(
        manager.registry,
        dataclasses.replace(shape, network=network),
        kind="task",
        name=options.name,
        labels=options.labels,
        ttl_seconds=options.ttl_seconds,
    )
    task_id = record.id
    try:
        SecretStore(manager.dir(task_id)).save(secrets)
        meta = TaskMeta(
            idle_timeout_seconds=options.idle_timeout_seconds,
            idle_action="pause" if options.idle_action == "pause" else "stop",
            last_activity_at=time.time(),
            secret_names=sorted(secrets),
            spare_disk=shape.backend.startswith("qemu"),
        )
        manager.save_meta(task_id, meta)
        build = _seed_image(manager, task_id, plan, shape.backend)
        try:
            _, client = manager.registry.start(
                task_id,
                data_disk=None if build is None else build.image,
                spare_disk=pushdisk.placeholder(manager.dir(task_id)) if meta.spare_disk else None,
                shared_ram=shape.backend.startswith("qemu"),  # so that it can be paused
            )
            with client:
                if plan is not None and build is not None:
                    build.wait()
                    datadisk.mount(client, build, WORKSPACE)
                    meta.seed = tree_result(plan, WORKSPACE, str(options.seed_path), build.bytes)
                    meta.seed_disk = True
                elif plan is not None:
                    meta.seed = upload_tree(client, plan, WORKSPACE, str(options.seed_path))
                else:
                    run_checked(client, ["mkdir", "-p", "--", WORKSPACE])
                if not shape.backend.startswith("qemu"):
                    run_checked(client, ["sync"])  # on QEMU the baseline snapshot syncs
        except BaseException:
            if build is not None:
                build.abandon()
            raise
        manager.save_meta(task_id, meta)
        if shape.backend.startswith("qemu"):
            snapshot_create(manager, task_id, BASELINE)
    except BaseException:
        manager.delete(task_id)
        raise
    return manager.status(task_id)


def _seed_image(
    manager: TaskManager, task_id: str, plan: TreePlan | None, backend: str
) -> datadisk.ImageBuild | None:
    """Start building the seed's data disk when it goes by disk (it builds while the guest
    boots); None when it goes through the agent."""
    if plan is None or not datadisk.wanted(backend, len(plan.files), plan.total_bytes):
        return None
    return datadisk.ImageBuild(tree_entries(plan), manager.dir(task_id))


def _check_range(what: str, value: int | None, low: int, high: int | None) -> None:
    """Raises: UsageError: ``value`` is given and outside [low, high] (the Run spec's limits)."""
    if value is not None and (value < low or (high is not None and value > high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{what} is {value}; it must be {bound}", f"give {what} {bound}")


def exec_command(
    manager: TaskManager,
    task_id: str,
    command: str | Sequence[str],
    *,
    timeout_seconds: int = 600,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Sequence[str] = (),
    on_stdout: Callable[[bytes], None] | None = None,
    on_stderr: Callable[[bytes], None] | None = None,
    stdin: Stdin | None = None,
) -> TaskExecOutput:
    """Run one command in the task's VM (booting it if stopped); never cleans up.

    ``on_stdout``/``on_stderr`` receive the output while it arrives, already redacted.
    ``stdin`` is streamed to the command (:func:`pyro.machines.exec.run_command`); the
    journal records only that there was one.

    Raises:
        NotFoundError: no such task.  UsageError: unknown secret name, empty command.
        StateError/GuestError: the VM broke during the command (journaled too).
    """
    argv = argv_of(command)
    _check_range("timeout_seconds", timeout_seconds, 1, None)
    _, meta = manager.get(task_id)
    store = SecretStore(manager.dir(task_id))
    redact = Redactor(store.load())
    full_env = dict(env or {})
    full_env.update(store.env_for(secret_env))
    workdir = guest_path(cwd, meta.workspace) if cwd else meta.workspace
    seq = manager.begin_exec(task_id)
    started = time.time()
    fields: dict[str, object] = {
        "seq": seq,
        "argv": redact.all(argv),
        "cwd": redact(workdir),
        "env": {k: redact(v) for k, v in (env or {}).items()},
        "secret_env": list(secret_env),
        "started_at": started,
        "stdin": stdin is not None,
    }
    streams = [redact.stream(sink) if sink else None for sink in (on_stdout, on_stderr)]
    begun = time.monotonic()
    try:
        out = _run(manager, task_id, argv, full_env, workdir, timeout_seconds, streams, stdin)
    except BaseException as exc:
        # Journal every command that ran or may have run, also when it was interrupted.
        if isinstance(exc, PyroError):
            exc.summary = redact(exc.summary)
            exc.args = (exc.summary,)
            error = exc.summary
        elif isinstance(exc, KeyboardInterrupt):
            error = "interrupted on the host (the command was cancelled)"
        else:
            error = redact(f"{type(exc).__name__}: {exc}")
        finished = time.time()
        fields.update(
            exit_code=None,
            error=error,
            finished_at=finished,
            duration_ms=int((finished - started) * 1000),
        )
        with contextlib.suppress(PyroError):
            manager.record_exec(task_id, fields)
        raise
    finally:
        for stream in streams:
            if stream is not None:
                stream.close()
    stdout, stderr = redact(out.stdout), redact(out.stderr)
    journal_out, out_cut = cap_text(stdout)
    journal_err, err_cut = cap_text(stderr)
    # Measured here: the wait for the task's session (and a boot of a stopped task) counts.
    duration_ms = int((time.monotonic() - begun) * 1000)
    fields.update(
        exit_code=out.exit_code,
        timed_out=out.timed_out,
        signal=out.signal,
        finished_at=time.time(),
        duration_ms=duration_ms,
        stdout=journal_out,
        stderr=journal_err,
        stdout_truncated=out.stdout_truncated or out_cut,
        stderr_truncated=out.stderr_truncated or err_cut,
    )
    entry = manager.record_exec(task_id, fields)
    shown = {"stdout": stdout, "stderr": stderr, "duration_ms": duration_ms}
    return TaskExecOutput(**{**out.model_dump(), **shown}, task_id=task_id, seq=entry.seq)


def _run(
    manager: TaskManager,
    task_id: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    timeout_seconds: int,
    streams: list[StreamRedactor | None],
    stdin: Stdin | None,
) -> ExecOutput:
    try:
        with manager.session(task_id) as client:
            return run_command(
                client,
                task_id,
                argv,
                env=env,
                cwd=cwd,
                timeout_s=float(timeout_seconds),
                on_stdout=streams[0].feed if streams[0] else None,
                on_stderr=streams[1].feed if streams[1] else None,
                # A task's disk outlives its VM: a later hard stop (a cancelled or cut-off
                # command holds the agent) must not lose what finished commands wrote.
                sync=True,
                stdin=stdin,
            )
    except OSError as exc:
        raise StateError(
            f"lost the connection to task {task_id}: {exc}",
            f"'pyro task status {task_id}' shows whether its VM is still running",
        ) from exc


# -- snapshots ---------------------------------------------------------------------------


def _backend_and_handle(record: VMRecord) -> tuple[Backend, VMHandle]:
    from pyro.vmm import get_backend
    from pyro.vmm.base import VMHandle

    assert record.handle is not None
    return get_backend(record.backend), VMHandle.from_dict(record.handle)


def snapshot_create(manager: TaskManager, task_id: str, name: str) -> SnapshotInfo:
    """Snapshot the task's disk: online (QMP, after a guest sync) when running, else offline.

    Raises:
        UsageError: bad name.  StateError: the name exists.  BackendUnavailableError.
    """
    check_name(name)
    record, meta = manager.get(task_id)
    require_qemu(record.backend)
    if any(s.name == name for s in meta.snapshots):
        raise StateError(
            f"task {task_id} already has a snapshot named {name!r}",
            f"choose another name, or delete it first with "
            f"'pyro task snapshot delete {task_id} {name}'",
        )
    begun = time.monotonic()
    online = record.state is VMState.RUNNING
    if online:
        # What finished before the sync is in the snapshot; QEMU drains the disk itself
        # while it writes it. Commands running meanwhile (other sessions) may be caught
        # half-way, as a hard power-off would catch them.
        with manager.session(task_id) as client:
            run_checked(client, ["sync"])
            record, _ = manager.get(task_id)
            create_online(*_backend_and_handle(record), name)
    else:
        with manager.registry.locked(task_id):
            record, _ = manager.get(task_id)
            if record.state is VMState.RUNNING:
                raise StateError(f"task {task_id} was started while being snapshotted", "try again")
            create_offline(manager.dir(task_id), name)
    info = SnapshotInfo(
        name=name,
        created_at=time.time(),
        online=online,
        duration_ms=int((time.monotonic() - begun) * 1000),
    )
    with manager.locked(task_id):
        _, meta = manager.get(task_id)
        meta.snapshots = [s for s in meta.snapshots if s.name != name] + [info]
        manager.save_meta(task_id, meta)
    return info


def snapshot_list(manager: TaskManager, task_id: str) -> list[SnapshotInfo]:
    """The task's snapshots, oldest first.

    Raises:
        NotFoundError: no such task.
    """
    _, meta = manager.get(task_id)
    return list(meta.snapshots)


def snapshot_delete(manager: TaskManager, task_id: str, name: str) -> bool:
    """Delete a snapshot; False when the task has none of that name.

    Raises:
        NotFoundError: no such task.
    """
    record, meta = manager.get(task_id)
    if not any(s.name == name for s in meta.snapshots):
        return False
    with manager.registry.locked(task_id):
        record, _ = manager.get(task_id)
        if record.state is VMState.RUNNING and record.handle is not None:
            delete_online(*_backend_and_handle(record), name)
        else:
            delete_offline(manager.dir(task_id), name)
    with manager.locked(task_id):
        _, meta = manager.get(task_id)
        meta.snapshots = [s for s in meta.snapshots if s.name != name]
        manager.save_meta(task_id, meta)
    return True


def reset(manager: TaskManager, task_id: str, snapshot: str = BASELINE) -> TaskInfo:
    """Put the task's disk back to ``snapshot``: stop, apply, start (the journal is kept).

    Raises:
        NotFoundError: no such task or snapshot.
    """
    record, meta = manager.get(task_id)
    require_qemu(record.backend)
    if not any(s.name == snapshot for s in meta.snapshots):
        names = ", ".join(s.name for s in meta.snapshots) or "none"
        raise NotFoundError(
            f"task {task_id} has no snapshot named {snapshot!r}", f"its snapshots: {names}"
        )
    manager.stop(task_id, reason=f"reset to snapshot {snapshot}")
    apply_offline(manager.dir(task_id), snapshot)
    return manager.start(task_id)
