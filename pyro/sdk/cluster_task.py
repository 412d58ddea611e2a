"""Task workspaces of a ``Pyro(cluster="ray://…")``: the task methods routed to the nodes.

With a cluster, :meth:`create_task` places the task on a node, where a per-node actor of
this client owns its VM (:mod:`pyro.cluster.ray_tasks`); the returned TaskInfo's ``id``
is the handle: ``exec_task`` (output streamed back as it arrives), ``read_task_file``,
``write_task_file``, ``list_task_files``, ``push_task_dir``, ``status_task``,
``logs_task`` and ``delete_task`` given that id go to its node. The other task methods
are refused for a cluster task with a clear error. ``close()`` deletes every task this
client placed. Without a cluster every method is the local one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError

from pyro.sdk.task import TaskMethods

if TYPE_CHECKING:
    from pyro.cluster.ray_tasks import ClusterTasks
    from pyro.machines.exec import Stdin
    from pyro.tasks.files import FileEntry, SyncResult
    from pyro.tasks.journal import TaskLogs
    from pyro.tasks.manager import TaskInfo
    from pyro.tasks.ops import TaskCreateOptions, TaskExecOutput
    from pyro.tasks.transfer import TaskFileWritten


M = TypeVar("M", bound=BaseModel)


def _from_node(model: type[M], answer: Any, task_id: str, what: str) -> M:
    """A node's answer as ``model``: a node is not trusted, its reply is checked like a
    guest's (a malformed one is a clear error, never a traceback).

    Raises:
        PyroError: the answer does not fit ``model``.
    """
    from pyro.cluster.ray_tasks import malformed

    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        detail = f"a malformed {model.__name__} ({exc.error_count()} problems)"
        raise malformed(f"{what} of task {task_id}", "of the task", detail) from exc


class ClusterTaskMethods(TaskMethods):
    """The task methods of :class:`pyro.Pyro`, routed to a cluster node when it has one."""

    _cluster: str | None
    _cluster_tasks: ClusterTasks | None = None

    def _remote(self) -> ClusterTasks | None:
        if self._cluster is None:
            return None
        owner = getattr(self, "_owner", self)  # a confined view routes through its owner's
        if owner._cluster_tasks is None:
            from pyro.cluster.ray_tasks import ClusterTasks

            owner._cluster_tasks = ClusterTasks(self._cluster)
        tasks: ClusterTasks = owner._cluster_tasks
        return tasks

    def close(self) -> None:
        """Delete every task this client placed on a cluster (nothing without one)."""
        if self._cluster_tasks is not None:
            self._cluster_tasks.close()

    def _create_task(
        self, environment: str, options: TaskCreateOptions, secrets: dict[str, str]
    ) -> TaskInfo:
        remote = self._remote()
        if remote is None:
            return super()._create_task(environment, options, secrets)
        from pyro.tasks.manager import TaskInfo

        seed_path = options.seed_path
        seed = None if seed_path is None else self._tree(seed_path, "seed_path")
        sent = options.model_dump(mode="json", exclude={"seed_path"})
        info = remote.create(options.backend, environment, sent, secrets, seed)
        return _from_node(TaskInfo, info, str(info.get("id")), "create")

    def _tree(self, folder: str | os.PathLike[str], what: str) -> bytes:
        """A host folder as a tar, checked (size, escaping symlinks) as a local seed is."""
        from pyro.cluster.worker import pack
        from pyro.tasks.files import scan_tree

        source = Path(self._host_path(folder, what))
        scan_tree(source)
        return pack(source)

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
        remote = self._remote()
        if remote is None:
            return super().exec_task(
                task_id,
                command,
                timeout_seconds=timeout_seconds,
                cwd=cwd,
                env=env,
                secret_env=secret_env,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                check=check,
                stdin=stdin,
            )
        from pyro.tasks.ops import TaskExecOutput

        if stdin is not None and not isinstance(stdin, str):
            # a stream travels whole: the node is elsewhere
            stdin = (
                bytes(stdin) if isinstance(stdin, (bytes, bytearray, memoryview)) else stdin.read()
            )
        options: dict[str, Any] = {
            "timeout_seconds": timeout_seconds,
            "cwd": cwd,
            "env": dict(env or {}),
            "secret_env": list(secret_env),
            "stdin": stdin,
        }
        argv = command if isinstance(command, str) else list(command)
        output = _from_node(
            TaskExecOutput,
            remote.exec(task_id, argv, options, on_stdout, on_stderr),
            task_id,
            "exec",
        )
        if check:
            output.check_returncode()
        return output

    def status_task(self, task_id: str) -> TaskInfo:
        remote = self._remote()
        if remote is None:
            return super().status_task(task_id)
        from pyro.tasks.manager import TaskInfo

        return _from_node(TaskInfo, remote.call(task_id, "status"), task_id, "status")

    def logs_task(self, task_id: str, *, tail: int | None = None) -> TaskLogs:
        remote = self._remote()
        if remote is None:
            return super().logs_task(task_id, tail=tail)
        from pyro.tasks.journal import TaskLogs

        entries = remote.call(task_id, "logs", tail)
        return _from_node(TaskLogs, {"task_id": task_id, "entries": entries}, task_id, "logs")

    def delete_task(self, task_id: str) -> bool:
        remote = self._remote()
        if remote is None:
            return super().delete_task(task_id)
        return bool(remote.call(task_id, "delete"))

    def copy_task_file(
        self, task_id: str, path: str, dst: BinaryIO, *, max_bytes: int | None = None
    ) -> int:
        remote = self._remote()
        if remote is None:
            return super().copy_task_file(task_id, path, dst, max_bytes=max_bytes)
        from pyro.sdk.task import guest_path

        data = remote.call(task_id, "read", guest_path(path), max_bytes)
        if not isinstance(data, bytes) or (max_bytes is not None and len(data) > max_bytes):
            from pyro.cluster.ray_tasks import malformed

            size = f"{len(data)} bytes" if isinstance(data, bytes) else type(data).__name__
            raise malformed(
                f"read {path} of task {task_id}", "of the task", f"{size}, asked for {max_bytes}"
            )
        dst.write(data)
        return len(data)

    def write_task_file(
        self, task_id: str, path: str, data: bytes | BinaryIO | Path, *, mode: int = 0o644
    ) -> TaskFileWritten:
        remote = self._remote()
        if remote is None:
            return super().write_task_file(task_id, path, data, mode=mode)
        from pyro.sdk.task import guest_path
        from pyro.tasks.transfer import TaskFileWritten

        target = guest_path(path)
        if isinstance(data, Path):
            data = Path(self._host_path(data, "host file")).read_bytes()
        elif not isinstance(data, bytes):
            data = data.read()
        answer = remote.call(task_id, "write", target, data, mode)
        return _from_node(TaskFileWritten, answer, task_id, "write")

    def list_task_files(self, task_id: str, path: str = "/workspace") -> list[FileEntry]:
        remote = self._remote()
        if remote is None:
            return super().list_task_files(task_id, path)
        from pyro.tasks.files import FileEntry

        entries = remote.call(task_id, "list_files", path)
        if not isinstance(entries, list):
            entries = [entries]  # refused below as a malformed entry
        return [_from_node(FileEntry, e, task_id, "list files") for e in entries]

    def push_task_dir(
        self, task_id: str, source: str | os.PathLike[str], *, dest: str = "/workspace"
    ) -> SyncResult:
        remote = self._remote()
        if remote is None:
            return super().push_task_dir(task_id, source, dest=dest)
        from pyro.sdk.task import guest_path
        from pyro.tasks.files import SyncResult

        target = guest_path(dest)
        tree = self._tree(source, "source folder")
        return _from_node(SyncResult, remote.call(task_id, "push", tree, target), task_id, "push")


for _name in (
    "exec_task",
    "status_task",
    "logs_task",
    "delete_task",
    "copy_task_file",
    "write_task_file",
    "list_task_files",
    "push_task_dir",
):  # the local method's documentation holds; the module docstring says what routes
    getattr(ClusterTaskMethods, _name).__doc__ = getattr(TaskMethods, _name).__doc__
