"""Task state as a thing of its own: pause/resume with memory, fork (a :class:`pyro.Pyro` mixin)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyro.tasks.manager import TaskInfo, TaskManager


class TaskStateMethods:
    """Pause, resume and fork methods of :class:`pyro.Pyro`.

    Every method raises :class:`pyro.errors.PyroError` subclasses only; an unknown
    ``task_id`` raises :class:`~pyro.errors.NotFoundError`.
    """

    @property
    def tasks(self) -> TaskManager:  # provided by TaskMethods
        raise NotImplementedError

    def pause_task(self, task_id: str) -> TaskInfo:
        """Save the running task's memory, devices and disk, and end its VM (its RAM and CPU
        are free); state ``paused``. ``resume_task`` (or the next ``exec_task``, which
        resumes it first) brings it back with its processes as they were.

        Raises:
            StateError: the task is stopped, or busy with a command for an hour.
            BackendUnavailableError: not the QEMU backend.  VMMError: the save failed (the
                task runs on).
        """
        return self.tasks.pause(task_id)

    def resume_task(self, task_id: str) -> TaskInfo:
        """Bring a paused task back (guest clock and RNG reset); a stopped task boots from
        its disk, as ``start_task``.

        Raises:
            StateError: it is running.  BootError: it did not come back (still paused).
        """
        return self.tasks.resume(task_id)

    def fork_task(
        self, task_id: str, *, snapshot: str | None = None, name: str | None = None
    ) -> TaskInfo:
        """A new running task from ``task_id``: from its current disk and memory when it
        runs or is paused (its processes go on in the fork, no cold boot), else from its
        disk; or from its disk snapshot ``snapshot`` (a cold boot). The fork has its own
        hostname and machine-id, secrets and labels of the source; the source runs on.

        Raises:
            NotFoundError: no such task or snapshot.  LimitError: no room for another VM.
            BackendUnavailableError: not QEMU.  StateError, BootError, VMMError.
        """
        from pyro.tasks.fork import fork

        return fork(self.tasks, task_id, snapshot=snapshot, name=name)
