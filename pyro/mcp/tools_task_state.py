"""The task state tools: pause/resume, fork, diff/patch (docs/tasks.md, "The state model")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.tool import READ_ONLY, RUNS, tool
from pyro.mcp.tools_task import TaskId
from pyro.mcp.tools_workspace import TaskBrief
from pyro.sdk.cancel import Cancellation
from pyro.tasks.diff import TaskDiff
from pyro.tasks.manager import TaskInfo
from pyro.tasks.patch import PatchResult


def _keep(task_id: str) -> None:
    """Cancelling a pause undoes nothing: the task is paused or runs on."""


class TaskStateTools(ToolGroup):
    """Pause, resume and fork tasks."""

    @tool(RUNS, title="Pause a task", profiles={"workspace": 20, "full": 33})
    async def task_pause(self, task_id: TaskId) -> TaskBrief:
        """Pause a task with its memory: processes kept, its RAM and CPU freed."""
        return TaskBrief.of(await in_thread(lambda token: self.sdk.pause_task(task_id), undo=_keep))

    @tool(RUNS, title="Resume a task", profiles={"workspace": 21, "full": 34})
    async def task_resume(self, task_id: TaskId) -> TaskBrief:
        """Resume a paused task as it was (task_exec resumes it too)."""
        info = await in_thread(lambda token: self.sdk.resume_task(task_id), undo=self.sdk.stop_task)
        return TaskBrief.of(info)

    @tool(RUNS, title="Fork a task", profiles={"workspace": 22, "full": 35})
    async def task_fork(
        self,
        task_id: TaskId,
        snapshot: Annotated[
            str | None, Field(description="From this snapshot (cold boot).")
        ] = None,
        name: Annotated[str | None, Field(description="Its name.")] = None,
    ) -> TaskBrief:
        """New task from a task's disk and memory (processes too) or a snapshot."""

        def work(token: Cancellation) -> TaskInfo:
            return self.sdk.fork_task(task_id, snapshot=snapshot, name=name)

        info = await in_thread(work, undo=self.sdk.delete_task, owned=lambda info: [info.id])
        return TaskBrief.of(info)

    @tool(READ_ONLY, title="Diff a task's workspace", profiles={"workspace": 23, "full": 36})
    async def task_diff(
        self,
        task_id: TaskId,
        path: Annotated[str | None, Field(description="Only this path.")] = None,
        since: Annotated[str, Field(description="Snapshot to compare with.")] = "baseline",
    ) -> TaskDiff:
        """What changed in /workspace since the baseline or a snapshot (unified diff)."""
        return await in_thread(
            lambda token: self.sdk.diff_task(task_id, path, since=since), undo=_keep
        )

    @tool(RUNS, title="Patch a task's files", profiles={"workspace": 24, "full": 37})
    async def task_patch(
        self,
        task_id: TaskId,
        patch: Annotated[str, Field(description="Unified diff, paths from /workspace.")],
    ) -> PatchResult:
        """Apply a unified diff to a task's files, all or nothing (failed hunks listed)."""
        return await in_thread(lambda token: self.sdk.patch_task(task_id, patch), undo=_keep)
