"""What a cluster node does for the task workspaces placed on it: the body of one Ray actor.

The actor (:mod:`pyro.cluster.ray_tasks` makes it) lives on one node and owns the tasks
it creates there, in the node's own state folder, through the same
:class:`~pyro.tasks.manager.TaskManager` a local ``pyro task`` uses. Each task is labelled
with its owner (this process). A task's VM is persistent: it would outlive a killed
actor, so a small watcher process (:func:`_watch`) deletes the tasks of an owner that is
gone (:func:`reap_orphans`), as does every new actor on the node. Host folders (a seed,
a pushed folder) arrive as tars, unpacked with the refusals of every transferred tar
(:func:`pyro.cluster.worker.unpack`). This module imports no Ray.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pyro.errors import PyroError

#: The label naming a task's owning actor process: ``PID-STARTTIME`` on its node.
OWNER_LABEL = "pyro.cluster/owner"


def _me() -> str:
    return _process_id(os.getpid()) or str(os.getpid())


def _process_id(pid: int) -> str | None:
    """``PID-STARTTIME`` of a living process (None: gone), so a reused pid is not taken
    for its predecessor."""
    import psutil

    try:
        return f"{pid}-{int(psutil.Process(pid).create_time() * 1000)}"
    except psutil.Error:
        return None


def _manager() -> Any:
    from pyro.machines.registry import VMRegistry
    from pyro.tasks.manager import TaskManager

    registry = VMRegistry()
    registry.reap()
    return TaskManager(registry)


def reap_orphans() -> list[str]:
    """Delete the tasks on this node whose owning actor process is gone; their ids."""
    manager = _manager()
    gone = []
    for info in manager.list_tasks():
        owner = info.labels.get(OWNER_LABEL)
        if owner is None:
            continue
        pid = owner.split("-", 1)[0]
        if pid.isdigit() and _process_id(int(pid)) == owner:
            continue
        with contextlib.suppress(PyroError):
            manager.delete(info.id)
            gone.append(info.id)
    return gone


class TaskHost:
    """The tasks one client placed on this node; every method answers in plain data."""

    def __init__(self) -> None:
        import atexit

        reap_orphans()
        self.owner = _me()
        self.tasks: set[str] = set()
        atexit.register(self.close)  # an actor that exits cleanly takes its tasks along
        _watch(os.getpid())  # one that is killed (its client gone) has them reaped

    def where(self) -> dict[str, Any]:
        """This actor's process id and state folder (for tests and error messages)."""
        from pyro.paths import state_dir

        return {"pid": os.getpid(), "state_dir": str(state_dir())}

    def create(
        self,
        environment: str,
        options: dict[str, Any],
        secrets: Mapping[str, str],
        seed: bytes | None,
    ) -> dict[str, Any]:
        from pyro.tasks.ops import TaskCreateOptions, create

        labels = {**options.get("labels", {}), OWNER_LABEL: self.owner}
        with _unpacked(seed) as folder:
            made = TaskCreateOptions.model_validate(
                {**options, "labels": labels, "seed_path": folder}
            )
            info = create(_manager(), environment, made, dict(secrets))
        self.tasks.add(info.id)
        return info.model_dump(mode="json")

    def exec(self, task_id: str, command: Any, options: dict[str, Any]) -> Iterator[Any]:
        """The command's output as it arrives (``("stdout"|"stderr", bytes)``), then
        ``("done", TaskExecOutput JSON)`` or ``("error", PyroError dict)``."""
        from pyro.tasks.ops import exec_command

        self._mine(task_id)
        chunks: queue.Queue[tuple[str, Any]] = queue.Queue()

        def run() -> None:
            try:
                output = exec_command(
                    _manager(),
                    task_id,
                    command,
                    on_stdout=lambda data: chunks.put(("stdout", data)),
                    on_stderr=lambda data: chunks.put(("stderr", data)),
                    **options,
                )
                chunks.put(("done", output.model_dump(mode="json")))
            except PyroError as error:
                chunks.put(("error", error.to_dict()))

        threading.Thread(target=run, name=f"pyro-exec-{task_id}", daemon=True).start()
        while True:
            kind, value = chunks.get()
            yield kind, value
            if kind in ("done", "error"):
                return

    def read(self, task_id: str, path: str, max_bytes: int | None) -> bytes:
        import io

        from pyro.tasks.transfer import read_file

        self._mine(task_id)
        buffer = io.BytesIO()
        read_file(_manager(), task_id, path, buffer, max_bytes=max_bytes)
        return buffer.getvalue()

    def write(self, task_id: str, path: str, data: bytes, mode: int) -> dict[str, Any]:
        from pyro.tasks.transfer import write_file

        self._mine(task_id)
        return write_file(_manager(), task_id, path, data, mode=mode).model_dump(mode="json")

    def list_files(self, task_id: str, path: str) -> list[dict[str, Any]]:
        from pyro.tasks.transfer import list_files

        self._mine(task_id)
        return [e.model_dump(mode="json") for e in list_files(_manager(), task_id, path)]

    def push(self, task_id: str, tree: bytes, dest: str) -> dict[str, Any]:
        from pyro.tasks.transfer import push_dir

        self._mine(task_id)
        with _unpacked(tree) as folder:
            assert folder is not None
            return push_dir(_manager(), task_id, folder, dest).model_dump(mode="json")

    def status(self, task_id: str) -> dict[str, Any]:
        self._mine(task_id)
        return dict(_manager().status(task_id, usage=True).model_dump(mode="json"))

    def logs(self, task_id: str, tail: int | None) -> list[dict[str, Any]]:
        self._mine(task_id)
        return [e.model_dump(mode="json") for e in _manager().logs(task_id, tail)]

    def delete(self, task_id: str) -> bool:
        self._mine(task_id)
        self.tasks.discard(task_id)
        return bool(_manager().delete(task_id))

    def close(self) -> list[str]:
        """Delete every task of this actor (the client is done with them); their ids."""
        deleted: list[str] = []
        if not self.tasks:
            return deleted
        manager = _manager()
        for task_id in sorted(self.tasks):
            with contextlib.suppress(PyroError):
                manager.delete(task_id)
                deleted.append(task_id)
        self.tasks.clear()
        return deleted

    def _mine(self, task_id: str) -> None:
        from pyro.errors import NotFoundError

        if task_id not in self.tasks:
            raise NotFoundError(
                f"task {task_id} is not one this client placed on this node",
                "list the tasks this client created; a task of another client is not routed",
            )


def _watch(pid: int) -> None:
    """Start a watcher that outlives this process and, once it is gone, deletes the tasks
    it owned (:func:`reap_orphans`): a task's VM is persistent, it does not die with us."""
    import subprocess
    import sys

    subprocess.Popen(
        [sys.executable, "-m", "pyro.cluster.task_host", str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _watch_then_reap(pid: int, poll_s: float = 0.5) -> None:
    import time

    import psutil

    with contextlib.suppress(psutil.Error):
        watched = psutil.Process(pid)
        while watched.is_running() and watched.status() != psutil.STATUS_ZOMBIE:
            time.sleep(poll_s)
    reap_orphans()


@contextlib.contextmanager
def _unpacked(tree: bytes | None) -> Iterator[str | None]:
    """A fresh folder holding ``tree`` (a tar checked by :func:`worker.unpack`, at most
    the seed cap of this node)."""
    if tree is None:
        yield None
        return
    from pyro.cluster.worker import unpack
    from pyro.tasks.files import seed_max_bytes

    with tempfile.TemporaryDirectory(prefix="pyro-task-tree-") as scratch:
        folder = Path(scratch) / "tree"
        folder.mkdir()
        unpack(tree, folder, max_bytes=seed_max_bytes())
        yield str(folder)


if __name__ == "__main__":  # the watcher _watch starts
    import sys

    _watch_then_reap(int(sys.argv[1]))
