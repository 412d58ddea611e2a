"""The task state tools: pause/resume, fork, diff/patch (docs/tasks.md, "The state model")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.tool import READ_ONLY, RUNS, tool
from pyro.mcp.tools_task import TaskId
from pyro.sdk.cancel import Cancellation
from pyro.tasks.diff import TaskDiff
from pyro.tasks.manager import TaskInfo
from pyro.tasks.patch import PatchResult


def _keep(task_id: str) -> None:
    """Cancelling a pause undoes nothing: the task is paused or runs on."""


class TaskStateTools(ToolGroup):
    """Pause, resume and fork tasks."""

    @tool(RUNS, title="Pause a task", profiles={"workspace": 20, "full": 33})
    async def task_pause(self, task_id: TaskId) -> TaskInfo:
        """Pause a task with its memory (processes kept; frees its RAM and CPU)."""
        return await in_thread(lambda token: self.sdk.pause_task(task_id), undo=_keep)

    @tool(RUNS, title="Resume a task", profiles={"workspace": 21, "full": 34})
    async def task_resume(self, task_id: TaskId) -> TaskInfo:
        """Resume a paused task as it was. task_exec also resumes it."""
        return await in_thread(lambda token: self.sdk.resume_task(task_id), undo=self.sdk.stop_task)

    @tool(RUNS, title="Fork a task", profiles={"workspace": 22, "full": 35})
    async def task_fork(
        self,
        task_id: TaskId,
        snapshot: Annotated[
            str | None, Field(description="Fork this disk snapshot (a cold boot) instead.")
        ] = None,
        name: Annotated[str | None, Field(description="The new task's name.")] = None,
    ) -> TaskInfo:
        """A new task from a task's disk and memory (processes included), or from one of
        its snapshots; the source runs on. Delete forks with task_delete.
        """

        def work(token: Cancellation) -> TaskInfo:
            return self.sdk.fork_task(task_id, snapshot=snapshot, name=name)

        return await in_thread(work, undo=self.sdk.delete_task, owned=lambda info: [info.id])

    @tool(READ_ONLY, title="Diff a task's workspace", profiles={"workspace": 23, "full": 36})
    async def task_diff(
        self,
        task_id: TaskId,
        path: Annotated[
            str | None, Field(description="Only this path (default /workspace).")
        ] = None,
        since: Annotated[str, Field(description="Snapshot to compare with.")] = "baseline",
    ) -> TaskDiff:
        """What changed in a task's /workspace since its baseline or a snapshot: a unified
        diff of text files and a line per other change.
        """
        return await in_thread(
            lambda token: self.sdk.diff_task(task_id, path, since=since), undo=_keep
        )

    @tool(RUNS, title="Patch a task's files", profiles={"workspace": 24, "full": 37})
    async def task_patch(
        self,
        task_id: TaskId,
        patch: Annotated[str, Field(description="A unified diff; paths from /workspace.")],
    ) -> PatchResult:
        """Apply a unified diff to a task's files, all or nothing: applied=false lists the
        failing hunks and nothing changed.
        """
        return await in_thread(lambda token: self.sdk.patch_task(task_id, patch), undo=_keep)
