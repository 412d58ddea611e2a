"""The task half of the :class:`pyro.Pyro` facade: persistent workspaces for repeated commands."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pyro.errors import UsageError
from pyro.lazy import lazy_attributes

if TYPE_CHECKING:  # the task machinery is imported on first use: `pyro run` never needs it
    from pyro.host.confine import Root
    from pyro.machines.exec import Stdin
    from pyro.tasks.files import FileEntry, SyncResult
    from pyro.tasks.journal import JournalEntry, TaskLogs
    from pyro.tasks.manager import TaskInfo, TaskManager
    from pyro.tasks.network import PublishItem
    from pyro.tasks.ops import TaskCreateOptions, TaskExecOutput
    from pyro.tasks.snapshots import SnapshotInfo
    from pyro.tasks.transfer import TaskFileWritten

__all__ = [
    "FileEntry",
    "JournalEntry",
    "SnapshotInfo",
    "SyncResult",
    "TaskExecOutput",
    "TaskFileWritten",
    "TaskInfo",
    "TaskLogs",
    "TaskMethods",
]


#: Where each task type named in ``__all__`` is defined (imported on first use).
_HOMES = {
    "FileEntry": "pyro.tasks.files",
    "JournalEntry": "pyro.tasks.journal",
    "SnapshotInfo": "pyro.tasks.snapshots",
    "SyncResult": "pyro.tasks.files",
    "TaskExecOutput": "pyro.tasks.ops",
    "TaskInfo": "pyro.tasks.manager",
    "TaskFileWritten": "pyro.tasks.transfer",
    "TaskLogs": "pyro.tasks.journal",
}


__getattr__ = lazy_attributes(__name__, _HOMES)


def guest_path(path: str) -> str:
    """``path`` checked as an absolute guest path (see :func:`pyro.tasks.files.guest_path`)."""
    from pyro.tasks.files import guest_path as check

    return check(path)


class TaskMethods:
    """Task workspace methods of :class:`pyro.Pyro`.

    Every method raises :class:`pyro.errors.PyroError` subclasses only; those taking a
    ``task_id`` raise :class:`~pyro.errors.NotFoundError` for an unknown id.
    """

    _state_dir: Path | None
    _root: Root | None = None  # confined by Pyro(confine_to=); None: the caller is trusted

    def _host_path(self, value: str | os.PathLike[str], what: str) -> str:
        """``value`` as a string; confined (``Pyro(confine_to=)``), resolved inside the root.

        Raises:
            OutsideRootError: confined, and ``value`` is outside the root.
        """
        if self._root is None:
            return os.fspath(value)
        return str(self._root.confine(value, what=what))

    @property
    def tasks(self) -> TaskManager:
        """The task manager, after reaping dead VMs, expired TTLs and idle tasks."""
        from pyro.machines.registry import VMRegistry

        registry = VMRegistry(self._state_dir)
        registry.reap()
        from pyro.tasks.manager import TaskManager

        manager = TaskManager(registry)
        manager.reap_idle()
        return manager

    def create_task(
        self,
        environment: str,
        *,
        seed_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        vcpus: int | None = None,
        memory_mib: int | None = None,
        ttl_seconds: int | None = None,
        idle_timeout_seconds: int | None = None,
        secrets: Mapping[str, str] | None = None,
        backend: str | None = None,
        network: str = "off",
        allow: Sequence[str] = (),
        publish: Sequence[PublishItem] = (),
        idle_action: str = "stop",
    ) -> TaskInfo:
        """Create and boot a task; ``/workspace`` is seeded from the host folder ``seed_path``.

        A ``baseline`` snapshot is taken once seeded (QEMU backend). ``network`` is the
        policy a Run spec's ``network.policy`` takes (``off``, ``egress``, ``allowlist`` with
        its ``allow`` entries ``HOST[:PORT]``); ``publish`` lists guest ports published on
        127.0.0.1 of the host, as ``(host_port, guest_port)``, ``{"host": H, "guest": G}``
        or ``"H:G"``. The task keeps its policy: every later boot applies it again.
        ``idle_action`` ``"pause"`` makes the idle timeout pause the task (memory kept)
        instead of stopping it.

        Raises:
            UsageError: bad secret, bad network policy, allow entry or published port, or
                ``seed_path`` is not a folder or holds a symlink leaving it.
            NetworkError: a published host port is taken (or privileged and not root).
            OutsideRootError: confined, and ``seed_path`` (or an ``environment`` path) is
                outside the root.
            LimitError: the seed is too large, or the host cannot hold the VM.
            EnvironmentNotFoundError, BackendUnavailableError, BootError.
        """
        from pyro.tasks.ops import TaskCreateOptions

        options = TaskCreateOptions(
            seed_path=None if seed_path is None else self._host_path(seed_path, "seed_path"),
            name=name,
            labels=dict(labels or {}),
            vcpus=vcpus,
            memory_mib=memory_mib,
            ttl_seconds=ttl_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
            idle_action=idle_action,
            backend=backend,
            network=network,
            allow=list(allow),
            publish=list(publish),
        )
        if self._root is not None:
            environment = self._root.environment(environment)
        return self._create_task(environment, options, dict(secrets or {}))

    def _create_task(
        self, environment: str, options: TaskCreateOptions, secrets: dict[str, str]
    ) -> TaskInfo:
        """Create the task the checked arguments describe (here; a cluster client on a node)."""
        from pyro.tasks.ops import create

        return create(self.tasks, environment, options, secrets)

    def exec_task(
        self,
        task_id: str,
        command: str | Sequence[str],
        *,
        timeout_seconds: int = 600,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        secret_env: Sequence[str] = (),
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        check: bool = False,
        stdin: Stdin | None = None,
    ) -> TaskExecOutput:
        """Run one command in the task (a shell string runs with ``sh -c``); the task stays.

        The default cwd is ``/workspace``; a stopped task is booted first. Secrets named in
        ``secret_env`` become env vars; their values are redacted from what is returned
        and journaled. ``on_stdout``/``on_stderr`` get the (redacted) output as it arrives.
        ``stdin`` (str, bytes or a binary file, read in chunks while the command runs) is
        the command's input (not journaled); default ``/dev/null``.

        Raises:
            NotFoundError: no such task.  UsageError: unknown secret name.
            StateError, GuestError: the VM broke (the failure is journaled).
            CommandFailedError: ``check``, and the command failed or timed out (the task
                stays; the error carries the TaskExecOutput).
        """
        from pyro.tasks.ops import exec_command

        output = exec_command(
            self.tasks,
            task_id,
            command,
            timeout_seconds=timeout_seconds,
            cwd=cwd,
            env=env,
            secret_env=secret_env,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            stdin=stdin,
        )
        if check:
            output.check_returncode()
        return output

    def status_task(self, task_id: str) -> TaskInfo:
        """State, resources, uptime, command count and last command of a task; for a
        running task also what it costs (``usage``: host CPU and RAM of its VM, the guest's
        CPU, memory and disk use).

        Raises:
            NotFoundError: no such task.
        """
        return self.tasks.status(task_id, usage=True)

    def logs_task(self, task_id: str, *, tail: int | None = None) -> TaskLogs:
        """The command journal (the last ``tail`` entries, or all).

        Raises:
            NotFoundError: no such task.
        """
        from pyro.tasks.journal import TaskLogs

        return TaskLogs(task_id=task_id, entries=self.tasks.logs(task_id, tail))

    def list_tasks(
        self, *, name: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[TaskInfo]:
        """Every task, oldest first, optionally only those with ``name`` and all ``labels``."""
        return self.tasks.list_tasks(name=name, labels=labels)

    def update_task(
        self,
        task_id: str,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        unlabel: Sequence[str] = (),
    ) -> TaskInfo:
        """Rename the task and set or remove labels (same rules as ``create_task``); the
        change is journaled (an entry of kind ``update``).

        Raises:
            NotFoundError: no such task.
            UsageError: nothing to change, a bad name or label, a key both set and removed.
        """
        from pyro.tasks.update import update

        return update(self.tasks, task_id, name=name, labels=labels, unlabel=unlabel)

    def delete_task(self, task_id: str) -> bool:
        """Remove the task's VM, disk, snapshots, journal and secrets. False if absent.

        Raises:
            NotFoundError: the id is a VM's, not a task's.
        """
        return self.tasks.delete(task_id)

    def stop_task(self, task_id: str) -> TaskInfo:
        """Sync and shut the guest down; disk and journal stay for ``start_task``.

        Raises:
            NotFoundError: no such task.
        """
        return self.tasks.stop(task_id)

    def start_task(self, task_id: str) -> TaskInfo:
        """Boot a stopped task again from its own disk.

        Raises:
            NotFoundError: no such task.  StateError: already running.  BootError.
        """
        return self.tasks.start(task_id)

    # -- files ------------------------------------------------------------------------------

    def read_task_file(self, task_id: str, path: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of a guest file (relative paths are under ``/workspace``).

        Raises:
            NotFoundError: no such task.  GuestPathError: no such file.
            LimitError: larger than ``max_bytes``.
        """
        buf = io.BytesIO()
        self.copy_task_file(task_id, path, buf, max_bytes=max_bytes)
        return buf.getvalue()

    def copy_task_file(
        self, task_id: str, path: str, dst: BinaryIO, *, max_bytes: int | None = None
    ) -> int:
        """Stream a guest file into ``dst``; returns its size.

        Raises:
            NotFoundError: no such task.  GuestPathError: no such file.  LimitError.
        """
        from pyro.tasks.transfer import read_file

        return read_file(self.tasks, task_id, path, dst, max_bytes=max_bytes)

    def write_task_file(
        self,
        task_id: str,
        path: str,
        data: bytes | BinaryIO | Path,
        *,
        mode: int = 0o644,
    ) -> TaskFileWritten:
        """Write ``data`` (bytes, a binary stream or a host file) to a guest path, atomically;
        parent folders are created.

        Raises:
            NotFoundError: no such task.  GuestPathError: the path cannot be written.
            OutsideRootError: confined, and the host file ``data`` is outside the root.
        """
        from pyro.tasks.transfer import write_file

        guest_path(path)  # a bad guest path is refused before the host file is looked at
        if isinstance(data, Path):
            data = Path(self._host_path(data, "host file"))
        return write_file(self.tasks, task_id, path, data, mode=mode)

    def list_task_files(self, task_id: str, path: str = "/workspace") -> list[FileEntry]:
        """The entries of a guest folder (a file lists as itself).

        Raises:
            NotFoundError: no such task.  GuestPathError: no such path.
        """
        from pyro.tasks.transfer import list_files

        return list_files(self.tasks, task_id, path)

    def push_task_dir(
        self, task_id: str, source: str | os.PathLike[str], *, dest: str = "/workspace"
    ) -> SyncResult:
        """Copy a host folder into the guest folder ``dest`` (same rules as the seed).

        Raises:
            NotFoundError: no such task.  UsageError: bad folder or escaping symlink.
            LimitError: too large.  OutsideRootError: confined, and ``source`` is outside
            the root.
        """
        from pyro.tasks.transfer import push_dir

        return push_dir(self.tasks, task_id, self._host_path(source, "source folder"), dest)

    def export_task_path(
        self,
        task_id: str,
        path: str,
        output: str | os.PathLike[str],
        *,
        include_git: bool = False,
    ) -> SyncResult:
        """Copy a guest file or folder to ``output`` on the host (``result.dest`` says
        where it went).

        What the guest sends is untrusted (see :func:`pyro.tasks.files.export_path`): git
        metadata (``.git``, folders laid out as git folders) is skipped and listed in
        ``result.skipped``, and an ``output`` in a ``.git`` folder is refused, unless
        ``include_git`` (a guest-written hook or ``core.fsmonitor`` runs at the next git
        command: only for a guest you trust).

        Confined (``Pyro(confine_to=)``), ``output`` must be inside the root, and the export
        lands in a new folder made for it, ``<root>/.pyro-artifacts/export-<task>-<time>-
        <random>/``, at ``output``'s path relative to the root: never over the root's own
        files (``.git``, ``Makefile``, an Environment spec the host would build).
        ``include_git`` is refused.

        Raises:
            NotFoundError: no such task.  GuestPathError: no such guest path.
            UsageError: ``output`` cannot be written or is in a ``.git`` folder; confined,
                and ``include_git`` was given.
            OutsideRootError: confined, and ``output`` is outside the root.
            LimitError: the export would pass a copy-out cap.
        """
        from pyro.tasks.transfer import export

        root = self._root
        if root is not None and include_git:
            raise UsageError(
                "include_git is refused for a confined Pyro (confine_to=): the caller must "
                "not plant git hooks or config on the host",
                "export without include_git; the host's user can copy git metadata with "
                "'pyro task export --include-git'",
            )
        target = Path(self._host_path(output, "export output"))
        if root is None:
            return export(self.tasks, task_id, path, target, include_git=include_git)
        made: list[Path] = []

        def fresh() -> Path:  # made once the task is found
            made.append(root.output_folder(f"export-{task_id}"))
            return made[0] / root.relative(target)

        try:
            return export(self.tasks, task_id, path, fresh)
        finally:
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: nothing was exported

    # -- snapshots --------------------------------------------------------------------------

    def create_task_snapshot(self, task_id: str, name: str) -> SnapshotInfo:
        """Snapshot the task's disk under ``name`` (the VM keeps running).

        Raises:
            NotFoundError: no such task.  StateError: the name exists.  UsageError: bad name.
            BackendUnavailableError: not the QEMU backend.
        """
        from pyro.tasks.ops import snapshot_create

        return snapshot_create(self.tasks, task_id, name)

    def list_task_snapshots(self, task_id: str) -> list[SnapshotInfo]:
        """The task's snapshots, oldest first.

        Raises:
            NotFoundError: no such task.
        """
        from pyro.tasks.ops import snapshot_list

        return snapshot_list(self.tasks, task_id)

    def delete_task_snapshot(self, task_id: str, name: str) -> bool:
        """Delete a snapshot; False if the task has none of that name.

        Raises:
            NotFoundError: no such task.
        """
        from pyro.tasks.ops import snapshot_delete

        return snapshot_delete(self.tasks, task_id, name)

    def reset_task(self, task_id: str, *, snapshot: str | None = None) -> TaskInfo:
        """Put the task's disk back to a snapshot (default: ``baseline``, the disk as the
        task was created) and boot it.

        Raises:
            NotFoundError: no such task or snapshot.  BackendUnavailableError.
        """
        from pyro.tasks.ops import reset
        from pyro.tasks.snapshots import BASELINE

        return reset(self.tasks, task_id, BASELINE if snapshot is None else snapshot)
