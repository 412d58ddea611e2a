"""Task workspaces: one persistent VM that many commands run in, one after another or at once.

A task is a VM record of ``kind="task"`` in the
:class:`pyro.machines.registry.VMRegistry` (so reaping,
limits and the ``vm`` plumbing are shared). What only tasks have lives beside the record
in the VM's directory ``$PYRO_STATE_DIR/vms/<id>/``:

``task.json``      :class:`TaskMeta`: workspace, idle timeout, activity, snapshots, seed
``journal.jsonl``  the command journal (:mod:`pyro.tasks.journal`)
``secrets.json``   secret values, mode 0600 (:mod:`pyro.tasks.secrets`)
``overlay.qcow2``  the task's own disk; stop/start boots from it again, snapshots live in it
``memory.ram``, ``paused.state``  its memory and devices while paused (:mod:`pyro.tasks.pause`)

Deleting the VM directory deletes the task whole. Execs update ``task.json`` and the
journal under a per-task file lock, so concurrent pyro processes never interleave them.
Commands reach the agent through the task's session keeper (:mod:`pyro.tasks.session`), so
several run at once, from any number of processes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field, ValidationError

from pyro import paths
from pyro.errors import GuestError, NotFoundError, PyroError, StateError
from pyro.machines import datadisk, pushdisk
from pyro.machines.registry import VMRecord, VMRegistry, VMState, check_id
from pyro.net.policy import NetworkConfig
from pyro.tasks import pause as pausing
from pyro.tasks import session
from pyro.tasks import usage as usages
from pyro.tasks.files import WORKSPACE, SyncResult, run_checked
from pyro.tasks.journal import Journal, JournalEntry
from pyro.tasks.secrets import Redactor, SecretStore
from pyro.tasks.service_specs import service_names
from pyro.tasks.session import KeeperSessions
from pyro.tasks.snapshots import SnapshotInfo

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient

META_FILE = "task.json"
STOP_TIMEOUT_S = 10.0
#: How long a usage probe waits for callers (a session just closed is seen a moment later).
USAGE_WAIT_S = 1.0
#: How long a caller waits for another one starting the task (a boot under TCG is slow).
SESSION_WAIT_S = 3600.0


class CommandSummary(BaseModel):
    """The last command of a task, as ``status`` shows it (redacted)."""

    seq: int
    argv: list[str]
    exit_code: int | None
    finished_at: float
    duration_ms: int


class TaskMeta(BaseModel):
    """Task-only data, persisted as ``task.json`` beside ``vm.json``."""

    workspace: str = WORKSPACE
    idle_timeout_seconds: int | None = None
    last_activity_at: float
    command_count: int = 0
    last_command: CommandSummary | None = None
    seed: SyncResult | None = None
    seed_disk: bool = False
    """The seed is a data disk (:mod:`pyro.machines.datadisk`), mounted under the workspace
    at every boot."""
    spare_disk: bool = False
    """The VM boots with a spare disk (:mod:`pyro.machines.pushdisk`) that large pushes
    swap in; False for tasks made before it existed (their saved state has none)."""
    secret_names: list[str] = []
    snapshots: list[SnapshotInfo] = []
    idle_action: Literal["stop", "pause"] = "stop"
    """What the idle timeout does: a cold stop, or a pause with the memory."""
    paused: pausing.PauseInfo | None = None
    """Set while the task is paused (its VMM is gone; ``memory.ram`` holds its RAM)."""
    hostname: str | None = None
    """Set by every boot's hello (a fork's own identity); None: the image's."""
    forked_from: str | None = None


class TaskInfo(BaseModel):
    """What ``status_task``/``list_tasks`` report about a task."""

    id: str
    name: str | None
    labels: dict[str, str]
    environment: str
    backend: str
    vcpus: int
    memory_mib: int
    state: str
    reason: str
    pid: int | None
    created_at: float
    started_at: float | None
    uptime_s: float | None
    ttl_seconds: int | None
    idle_timeout_seconds: int | None
    last_activity_at: float
    workspace: str
    disk_bytes: int
    command_count: int
    last_command: CommandSummary | None
    secret_names: list[str]
    snapshots: list[str]
    seed: SyncResult | None = None
    network: dict[str, Any] = {"policy": "off", "allow": [], "publish": []}
    """The policy it boots with: ``{policy, allow, publish: [{host, guest}]}`` (host ports
    on 127.0.0.1), as a Run spec states it."""
    idle_action: str = Field("stop", description="Idle timeout: stop or pause.")
    paused_at: float | None = Field(None, description="Paused, Unix time.")
    memory_file_bytes: int = Field(0, description="Saved memory on disk, bytes.")
    forked_from: str | None = Field(None, description="Source task of a fork.")
    usage: usages.TaskUsage | None = Field(None, description="CPU, memory, disk use now.")
    services: list[str] = Field(
        default=[], description="Names of its services (task_service_list: their state)."
    )


class TaskManager:
    """Task operations on top of a VM registry."""

    def __init__(self, registry: VMRegistry, sessions: KeeperSessions | None = None) -> None:
        self.registry = registry
        self.sessions = sessions or KeeperSessions(registry)

    # -- records --------------------------------------------------------------------------

    def dir(self, task_id: str) -> Path:
        return self.registry.dir(task_id)

    @contextlib.contextmanager
    def locked(self, task_id: str) -> Iterator[None]:
        """The per-task lock for ``task.json`` and the journal (never held across an exec).
        Its file goes when the task does not exist (any more).

        Raises:
            NotFoundError: ``task_id`` cannot be an id.
        """
        check_id(task_id)
        lock = self.registry.lock_path(f"task-{task_id}")
        with FileLock(str(lock), timeout=60, mode=paths.PRIVATE_FILE_MODE):
            try:
                yield
            finally:
                if not self.dir(task_id).exists():  # removed while held (see VMRegistry)
                    with contextlib.suppress(OSError):
                        lock.unlink()

    def get(self, task_id: str) -> tuple[VMRecord, TaskMeta]:
        """Raises: NotFoundError: no task has this id (a VM id is refused too)."""
        try:
            record = self.registry.get(task_id)
        except NotFoundError:
            raise NotFoundError(
                f"no task with id {task_id!r}", "run 'pyro task list' to see the tasks"
            ) from None
        if record.kind != "task":
            raise NotFoundError(
                f"{task_id} is a VM, not a task", f"use 'pyro vm status {task_id}' for VMs"
            )
        return record, self.meta(task_id, record)

    def meta(self, task_id: str, record: VMRecord) -> TaskMeta:
        path = self.dir(task_id) / META_FILE
        try:
            return TaskMeta.model_validate_json(path.read_bytes())
        except FileNotFoundError:  # made by an older pyro, or create died half-way
            return TaskMeta(last_activity_at=record.started_at or record.created_at)
        except (OSError, ValidationError) as exc:
            raise StateError(
                f"the task data of {task_id} is unreadable: {exc}",
                f"delete the task with 'pyro task delete {task_id}'",
            ) from exc

    def save_meta(self, task_id: str, meta: TaskMeta) -> None:
        paths.write_private(self.dir(task_id) / META_FILE, meta.model_dump_json(indent=2))

    def touch(self, task_id: str) -> None:
        """Record activity now (what idle reaping measures from)."""
        with self.locked(task_id):
            _, meta = self.get(task_id)
            self.save_meta(task_id, meta.model_copy(update={"last_activity_at": time.time()}))

    def info(self, record: VMRecord, meta: TaskMeta) -> TaskInfo:
        public = record.public()
        disk_bytes = 0
        for disk in ("overlay.qcow2", datadisk.IMAGE):
            with contextlib.suppress(OSError):
                disk_bytes += (self.dir(record.id) / disk).stat().st_blocks * 512
        redact = self.redactor(record.id)
        last = meta.last_command
        if last is not None:
            last = last.model_copy(update={"argv": redact.all(last.argv)})
        return TaskInfo(
            id=record.id,
            name=record.name,
            labels=record.labels,
            environment=record.environment,
            backend=record.backend,
            vcpus=record.vcpus,
            memory_mib=record.memory_mib,
            state="paused" if meta.paused is not None else record.state.value,
            reason=redact(record.reason),
            pid=public["pid"],
            created_at=record.created_at,
            started_at=record.started_at,
            uptime_s=public["uptime_s"],
            ttl_seconds=record.ttl_seconds,
            idle_timeout_seconds=meta.idle_timeout_seconds,
            last_activity_at=meta.last_activity_at,
            workspace=meta.workspace,
            disk_bytes=disk_bytes,
            command_count=meta.command_count,
            last_command=last,
            secret_names=meta.secret_names,
            snapshots=[s.name for s in meta.snapshots],
            seed=meta.seed,
            network=NetworkConfig.from_dict(record.network).to_dict(),
            idle_action=meta.idle_action,
            paused_at=meta.paused.paused_at if meta.paused is not None else None,
            memory_file_bytes=pausing.memory_bytes(self.dir(record.id)),
            forked_from=meta.forked_from,
            services=service_names(self.dir(record.id)),
        )

    def redactor(self, task_id: str) -> Redactor:
        return Redactor(SecretStore(self.dir(task_id)).load())

    def list_tasks(
        self, *, name: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[TaskInfo]:
        """Tasks, oldest first, filtered by name and (all of the) labels."""
        out = []
        for record in self.registry.list(kind="task"):
            if name is not None and record.name != name:
                continue
            if labels and any(record.labels.get(k) != v for k, v in labels.items()):
                continue
            with contextlib.suppress(PyroError):
                out.append(self.info(record, self.meta(record.id, record)))
        return out

    # -- lifecycle ------------------------------------------------------------------------

    def client(self, task_id: str, *, boot: bool = True) -> AgentClient:
        """An agent connection to the task's VM, booting it from its disk when stopped or
        resuming it when paused (unless ``boot`` is false). Callers should prefer
        :meth:`session`.

        Raises:
            NotFoundError: no such task.  BootError: it did not come up.
            StateError: it is not running and ``boot`` is false.
        """
        record, _ = self.get(task_id)
        if record.state is VMState.RUNNING:
            try:
                return self.registry.connect(task_id)
            except StateError:
                # Its VMM died since the last reap (now recorded as stopped): boot it again.
                if not boot or self.get(task_id)[0].state is VMState.RUNNING:
                    raise
        if not boot:
            raise StateError(f"task {task_id} is not running")
        image = self._data_disk(task_id)
        try:
            client = self._boot(task_id, image)
        except StateError:  # another process started it meanwhile
            return self.registry.connect(task_id)
        self.touch(task_id)
        return client

    def _data_disk(self, task_id: str) -> Path | None:
        """The seed's data disk of the task, None if it has none.

        Raises:
            NotFoundError: no such task.  StateError: its data disk is gone.
        """
        _, meta = self.get(task_id)
        image = self.dir(task_id) / datadisk.IMAGE if meta.seed_disk else None
        if image is not None and not image.is_file():
            raise StateError(
                f"task {task_id} lost the data disk its workspace is seeded from ({image})",
                f"delete the task ('pyro task delete {task_id}') and create it again",
            )
        return image

    def _boot(self, task_id: str, image: Path | None) -> AgentClient:
        """Start the task's VM: resumed when paused, else a cold boot from its disk with its
        seed's data disk ``image`` (if any) mounted again.

        Raises:
            StateError: running already.  BootError, GuestError.
        """
        record, meta = self.get(task_id)
        spare = pushdisk.placeholder(self.dir(task_id)) if meta.spare_disk else None
        if meta.paused is not None:
            client = pausing.resume(
                self.registry, task_id, data_disk=image, spare_disk=spare, hostname=meta.hostname
            )
            with self.locked(task_id):
                _, meta = self.get(task_id)
                self.save_meta(task_id, meta.model_copy(update={"paused": None}))
            return client
        if self.get(task_id)[0].state is not VMState.RUNNING:
            pausing.discard(self.dir(task_id))  # a memory file left by a resumed run
        _, client = self.registry.start(
            task_id,
            data_disk=image,
            spare_disk=spare,
            shared_ram=record.backend.startswith("qemu"),  # so that it can be paused
            hostname=meta.hostname,
        )
        if image is not None:
            try:
                datadisk.remount(client, self.get(task_id)[1].workspace)
            except BaseException:
                client.close()
                self.registry.stop(task_id, reason="its seed disk could not be mounted")
                raise
        return client

    def _session_lock(self, task_id: str) -> FileLock:
        check_id(task_id)
        lock = self.registry.lock_path(f"task-{task_id}.session")
        return FileLock(str(lock), mode=paths.PRIVATE_FILE_MODE)

    def _drop_session_lock(self, task_id: str, lock: FileLock) -> None:
        """Release the session lock; its file goes first when the task is gone."""
        if not self.dir(task_id).exists():
            with contextlib.suppress(OSError):
                os.unlink(lock.lock_file)
        lock.release()

    @contextlib.contextmanager
    def session(self, task_id: str, *, wait: float = SESSION_WAIT_S) -> Iterator[AgentClient]:
        """A connection to the task's agent through its session keeper (booting a stopped
        task, starting the keeper when none runs); any number of them at once, from any
        number of processes (:mod:`pyro.tasks.session`). Closing it cancels what it left
        running in the guest; so does cancelling the call that opened it, when the call
        runs under :func:`pyro.tasks.session.collecting`.

        Raises:
            StateError: another caller held the task's session lock (a boot) for more than
                ``wait`` seconds.
        """
        scope = session.current()
        client = self._session_client(task_id, wait=wait, boot=True)
        if scope is not None:
            scope.add(client)
        try:
            yield client
        except GuestError as exc:
            if scope is not None and scope.closed:
                raise StateError(
                    f"the call was cancelled; its command in task {task_id} was cancelled too",
                    f"the task keeps running: 'pyro task logs {task_id}' shows what ran",
                ) from exc
            raise
        finally:
            if scope is not None:
                scope.discard(client)
            client.close()

    def _session_client(self, task_id: str, *, wait: float, boot: bool) -> AgentClient:
        """A connection through the task's keeper, started (and the VM booted, if ``boot``)
        when none runs; under the session lock, which is held for nothing else.

        Raises:
            StateError: the lock stayed taken for ``wait`` s; not running and not ``boot``.
        """
        self.get(task_id)  # NotFoundError before anything else
        lock = self._session_lock(task_id)
        try:
            lock.acquire(timeout=wait)
        except Timeout as exc:
            raise StateError(
                f"task {task_id} is busy starting for more than {wait:.0f} s",
                f"try again, or stop it with 'pyro task stop {task_id}'",
            ) from exc
        try:
            client = self.sessions.connect(task_id)
            if client is not None:
                return client
            record, _ = self.get(task_id)
            if record.state is not VMState.RUNNING or not self.registry.is_running(task_id):
                # Booted with a connection of its own (mounting the seed disk), closed
                # before the keeper takes the agent over.
                self.client(task_id, boot=boot).close()
            return self.sessions.start(task_id, Path(lock.lock_file))
        finally:
            self._drop_session_lock(task_id, lock)

    def start(self, task_id: str) -> TaskInfo:
        """Boot a stopped task from its own disk.

        Raises:
            NotFoundError: no such task.  StateError: it is running.  BootError.
        """
        client = self._boot(task_id, self._data_disk(task_id))
        client.close()
        self.touch(task_id)
        return self.status(task_id)

    def stop(self, task_id: str, *, reason: str = "stopped by user") -> TaskInfo:
        """Sync and power the guest off, then make sure the VMM is gone; the disk stays.

        A command still running after ``STOP_TIMEOUT_S`` is cut off (and journaled so).

        Raises:
            NotFoundError: no such task.
        """
        self._stop(task_id, reason=reason, wait=STOP_TIMEOUT_S, force=True)
        return self.status(task_id)

    def _stop(self, task_id: str, *, reason: str, wait: float, force: bool) -> bool:
        """Stop the task; when callers keep its session busy past ``wait``, stop anyway only
        if ``force``. Returns whether it was stopped."""
        record, meta = self.get(task_id)
        if record.state is not VMState.RUNNING:
            if meta.paused is not None:  # stopping a paused task discards its memory
                with self.registry.locked(task_id):
                    pausing.discard(self.dir(task_id))
                with self.locked(task_id):
                    _, meta = self.get(task_id)
                    self.save_meta(task_id, meta.model_copy(update={"paused": None}))
                self.registry.stop(task_id, reason=reason)
                return True
            self.registry.stop(task_id, reason=record.reason or reason)
            self.sessions.end(task_id)
            return True
        deadline = time.monotonic() + wait
        while self.sessions.busy(task_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.sessions.busy(task_id) and not force:
            return False
        try:
            # The agent syncs the guest's page cache to its disk before powering off;
            # QMP quit alone would lose writes the guest has not flushed yet. Commands still
            # running then are cut off by the power-off (their callers journal it).
            with contextlib.suppress(PyroError, OSError):
                self._session_client(task_id, wait=STOP_TIMEOUT_S, boot=False).shutdown(
                    timeout_s=STOP_TIMEOUT_S
                )
            self.registry.stop(task_id, reason=reason)
            pausing.discard(self.dir(task_id))  # a resumed guest's memory file
        finally:
            self.sessions.end(task_id)
        return True

    @contextlib.contextmanager
    def exclusive(self, task_id: str, *, wait: float) -> Iterator[bool]:
        """The task's agent to one caller alone, for what must not cut a command in two
        (pause, fork, a usage probe): takes the session lock (no new caller can connect),
        waits up to ``wait`` for connected callers to finish, then ends the idle keeper so
        the agent's one connection is free for :meth:`client`. Yields False (holding
        nothing) when callers stayed past ``wait``."""
        lock = self._session_lock(task_id)
        deadline = time.monotonic() + wait
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            yield False
            return
        try:
            while self.sessions.busy(task_id) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.sessions.busy(task_id):
                yield False
                return
            self.sessions.end(task_id)
            yield True
        finally:
            self._drop_session_lock(task_id, lock)

    def pause(self, task_id: str, *, wait: float = SESSION_WAIT_S) -> TaskInfo:
        """Save the running task's memory, devices and disk and end its VMM (frees its RAM
        and CPU); the next exec, ``start`` or ``resume`` brings it back as it was. A paused
        task stays paused.

        Raises:
            NotFoundError: no such task.  StateError: it is stopped, or a command kept it
                busy past ``wait``.  BackendUnavailableError: not QEMU.  VMMError.
        """
        self._pause(task_id, wait=wait)
        return self.status(task_id)

    def _pause(self, task_id: str, *, wait: float) -> bool:
        """Pause it; False when a command held its session past ``wait``."""
        from pyro.tasks.snapshots import require_qemu

        record, meta = self.get(task_id)
        require_qemu(record.backend)
        if meta.paused is not None:
            return True
        if record.state is not VMState.RUNNING:
            raise StateError(
                f"task {task_id} is stopped: there is no memory to pause",
                f"start it first ('pyro task start {task_id}')",
            )
        with self.exclusive(task_id, wait=wait) as alone:
            if not alone:
                if wait > 0:
                    raise StateError(
                        f"task {task_id} is busy with a command for more than {wait:.0f} s",
                        "wait for it to finish, then pause it",
                    )
                return False
            # Synced first, so that what the guest wrote is on the disk that offline reads
            # (file read/list, export, diff) of the paused task see.
            with contextlib.suppress(PyroError, OSError), self.client(task_id, boot=False) as c:
                run_checked(c, ["sync"])
            info = pausing.save(self.registry, task_id)
            with self.locked(task_id):
                _, meta = self.get(task_id)
                self.save_meta(task_id, meta.model_copy(update={"paused": info}))
        return True

    def resume(self, task_id: str) -> TaskInfo:
        """Bring a paused task back (a stopped one boots from its disk, like ``start``).

        Raises:
            NotFoundError: no such task.  StateError: it is running.  BootError.
        """
        return self.start(task_id)

    def delete(self, task_id: str) -> bool:
        """Remove the VM, its disk, journal, secrets and snapshots. False if it did not exist.

        Raises:
            NotFoundError: the id names a VM, not a task.
        """
        try:
            self.get(task_id)
        except NotFoundError as exc:
            if "is a VM" in exc.summary:
                raise
            return False
        except StateError:
            pass
        self.sessions.end(task_id)
        return self.registry.delete(task_id)  # removes the task's lock files too

    def status(self, task_id: str, *, usage: bool = False) -> TaskInfo:
        """The task; with ``usage``, what a running one costs (:mod:`pyro.tasks.usage`).

        Raises:
            NotFoundError: no such task.
        """
        record, meta = self.get(task_id)
        info = self.info(record, meta)
        if usage and record.state is VMState.RUNNING:
            info.usage = self._usage(task_id, info.pid, meta.workspace)
        return info

    def _usage(self, task_id: str, pid: int | None, workspace: str) -> usages.TaskUsage:
        """Host figures always; guest figures unless a command holds the task's session."""
        usage = usages.host_usage(pid)
        with self.exclusive(task_id, wait=USAGE_WAIT_S) as alone:
            if not alone:
                usage.note = "the task is busy with a command: guest figures left out"
                return usage
            try:
                with self.client(task_id, boot=False) as client:
                    usages.guest_usage(client, workspace, usage)
            except PyroError as exc:
                usage.note = f"the guest did not answer: {exc.summary}"
        return usage

    def reap_idle(self) -> list[str]:
        """Stop (or pause, per their idle action) running tasks that had no exec for their
        idle timeout. Returns their ids."""
        stopped = []
        now = time.time()
        for record in self.registry.list(kind="task"):
            if record.state is not VMState.RUNNING:
                continue
            with contextlib.suppress(PyroError):
                meta = self.meta(record.id, record)
                idle = meta.idle_timeout_seconds
                if idle is not None and now - meta.last_activity_at > idle:
                    # A command still running holds the session: the task is not idle.
                    if meta.idle_action == "pause":
                        if self._pause(record.id, wait=0):
                            stopped.append(record.id)
                        continue
                    reason = f"idle for more than {idle} s (idle timeout)"
                    if self._stop(record.id, reason=reason, wait=0, force=False):
                        stopped.append(record.id)
        return stopped

    # -- journal --------------------------------------------------------------------------

    def begin_exec(self, task_id: str) -> int:
        """Number the exec that starts now (execs are numbered in start order)."""
        with self.locked(task_id):
            _, meta = self.get(task_id)
            seq = meta.command_count + 1
            self.save_meta(task_id, meta.model_copy(update={"command_count": seq}))
            return seq

    def record_exec(self, task_id: str, entry_fields: dict[str, object]) -> JournalEntry:
        """Append one journal entry (numbered now unless ``entry_fields`` has the ``seq``
        from :meth:`begin_exec`), and update the task's counters.

        ``entry_fields`` must already be redacted.
        """
        with self.locked(task_id):
            _, meta = self.get(task_id)
            seq = entry_fields.get("seq") or meta.command_count + 1
            entry = JournalEntry.model_validate({**entry_fields, "seq": seq})
            Journal(self.dir(task_id)).append(entry)
            summary = CommandSummary(
                seq=entry.seq,
                argv=entry.argv,
                exit_code=entry.exit_code,
                finished_at=entry.finished_at,
                duration_ms=entry.duration_ms,
            )
            meta = meta.model_copy(
                update={
                    "command_count": max(meta.command_count, entry.seq),
                    "last_command": summary,
                    "last_activity_at": time.time(),
                }
            )
            self.save_meta(task_id, meta)
            return entry

    def logs(self, task_id: str, tail: int | None = None) -> list[JournalEntry]:
        """Raises: NotFoundError: no such task."""
        self.get(task_id)
        return Journal(self.dir(task_id)).entries(tail)
