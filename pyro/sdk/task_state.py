"""Task state as a thing of its own: pause/resume, fork, diff/patch (a :class:`pyro.Pyro` mixin)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyro.tasks.diff import TaskDiff
    from pyro.tasks.manager import TaskInfo, TaskManager
    from pyro.tasks.patch import PatchResult


class TaskStateMethods:
    """Pause, resume, fork, diff and patch methods of :class:`pyro.Pyro`.

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

    def diff_task(
        self, task_id: str, path: str | None = None, *, since: str = "baseline"
    ) -> TaskDiff:
        """What changed below ``path`` (default ``/workspace``) since the snapshot ``since``
        (default the task's baseline): a unified diff of text files and a line per other
        change, read from the disk on the host (never from what the guest says).

        Raises:
            NotFoundError: no such task or snapshot.  LimitError: too many entries.
            UsageError: a workspace seeded by data disk.  GuestPathError: a hostile disk.
        """
        from pyro.tasks.diff import diff

        return diff(self.tasks, task_id, path, since=since)

    def patch_task(self, task_id: str, patch: bytes | str) -> PatchResult:
        """Apply a unified diff to the task's files (paths from ``/workspace``), all or
        nothing: when a hunk fails, ``applied`` is false, ``failed`` lists every failing hunk
        and no file was touched.

        Raises:
            UsageError: not a unified diff, or a target that is not a UTF-8 text file.
            NotFoundError: no such task.  GuestError: the guest failed to write.
        """
        from pyro.tasks.patch import apply

        return apply(self.tasks, task_id, patch.encode() if isinstance(patch, str) else patch)
