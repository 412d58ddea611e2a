"""The rest of a task workspace over MCP: files, sync, export, snapshots, reset, stop/start,
update. Each tool is one SDK call; host paths go through the client's root (:mod:`.roots`).

They are offered by the ``workspace`` profile (an agent living in a task) and ``full``;
``task-core`` stays the six task tools (:mod:`pyro.mcp.profiles`). Descriptions are terse:
every conversation with these profiles pays for them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field

from pyro.errors import LimitError, UsageError
from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.roots import ClientRoots, mcp_root
from pyro.mcp.tool import CHANGES_LOCAL, DESTRUCTIVE, READ_ONLY, RUNS, tool
from pyro.mcp.tools_task import TaskId
from pyro.sdk.cancel import Cancellation
from pyro.tasks.files import FileEntry, SyncResult
from pyro.tasks.manager import TaskInfo
from pyro.tasks.snapshots import SnapshotInfo
from pyro.tasks.transfer import TaskFileWritten

T = TypeVar("T")

#: The most ``task_file_read`` returns, and the default; larger files: ``task_export``.
READ_MAX = 1 << 20
READ_DEFAULT = 64 * 1024
#: The most ``task_file_write`` takes (decoded); larger: ``task_sync_push`` a host folder.
WRITE_MAX = 1 << 20

GuestPath = Annotated[str, Field(description="Guest path; relative ones start at /workspace.")]
Encoding = Literal["utf-8", "base64"]
SnapshotName = Annotated[str, Field(description="Snapshot name.")]


class TaskBrief(BaseModel):
    """What the lifecycle tools report: the task's id, name, labels and state (task_status
    has the rest; its schema is not repeated in every tool)."""

    id: str
    name: str | None
    labels: dict[str, str]
    state: str
    reason: str
    snapshots: list[str]

    @classmethod
    def of(cls, info: TaskInfo) -> TaskBrief:
        return cls.model_validate(info.model_dump(include=set(cls.model_fields)))


class FileList(BaseModel):
    """What ``task_file_list`` reports."""

    entries: list[FileEntry]


class FileRead(BaseModel):
    """What ``task_file_read`` reports."""

    path: str
    size: int
    encoding: Encoding
    content: str


class SnapshotList(BaseModel):
    """What ``task_snapshot_list`` reports."""

    snapshots: list[SnapshotInfo]


class SnapshotDeleted(BaseModel):
    """What ``task_snapshot_delete`` reports."""

    name: str
    deleted: bool


class WorkspaceTools(ToolGroup):
    """Files, transfers, snapshots and lifecycle of a task, one SDK call each."""

    async def _call(
        self, work: Callable[[Cancellation], T], undo: Callable[[str], object] | None = None
    ) -> T:
        # Nothing these tools start outlives a cancel except a boot: that task is stopped.
        return await in_thread(work, undo=undo or (lambda _id: None))

    @tool(CHANGES_LOCAL, title="Rename or relabel a task", profiles={"workspace": 8, "full": 21})
    async def task_update(
        self,
        task_id: TaskId,
        name: Annotated[str | None, Field(description="New name.")] = None,
        labels: Annotated[dict[str, str] | None, Field(description="Labels to set.")] = None,
        unlabel: Annotated[list[str] | None, Field(description="Label keys to remove.")] = None,
    ) -> TaskBrief:
        """Rename a task and set or remove labels (journaled)."""
        info = await self._call(
            lambda token: self.sdk.update_task(
                task_id, name=name, labels=labels, unlabel=unlabel or ()
            )
        )
        return TaskBrief.of(info)

    @tool(DESTRUCTIVE, title="Stop a task", profiles={"workspace": 9, "full": 22}, idempotent=True)
    async def task_stop(self, task_id: TaskId) -> TaskBrief:
        """Shut a task's VM down; disk and journal stay (task_exec or task_start boots it)."""
        return TaskBrief.of(await self._call(lambda token: self.sdk.stop_task(task_id)))

    @tool(RUNS, title="Start a task", profiles={"workspace": 10, "full": 23})
    async def task_start(self, task_id: TaskId) -> TaskBrief:
        """Boot a stopped task again from its own disk; files and packages are kept."""

        def work(token: Cancellation) -> TaskInfo:
            token.track(task_id)
            return self.sdk.start_task(task_id)

        return TaskBrief.of(await self._call(work, undo=self.sdk.stop_task))

    @tool(READ_ONLY, title="List guest files", profiles={"workspace": 11, "full": 24})
    async def task_file_list(
        self,
        task_id: TaskId,
        path: Annotated[str, Field(description="Guest folder.")] = "/workspace",
    ) -> FileList:
        """Entries of a guest folder: name, kind, size, mode."""
        entries = await self._call(lambda token: self.sdk.list_task_files(task_id, path))
        return FileList(entries=entries)

    @tool(READ_ONLY, title="Read a guest file", profiles={"workspace": 12, "full": 25})
    async def task_file_read(
        self,
        task_id: TaskId,
        path: GuestPath,
        max_bytes: Annotated[
            int, Field(description=f"Refuse larger files (at most {READ_MAX}).", ge=1, le=READ_MAX)
        ] = READ_DEFAULT,
    ) -> FileRead:
        """A guest file's content: UTF-8 text, else base64."""
        try:
            data = await self._call(
                lambda token: self.sdk.read_task_file(task_id, path, max_bytes=max_bytes)
            )
        except LimitError:
            raise LimitError(
                f"guest file {path} is larger than max_bytes={max_bytes}",
                f"read it in parts with task_exec (head -c, tail -c; up to {READ_MAX} bytes "
                "with max_bytes), or copy it to the host with task_export",
            ) from None
        try:
            return FileRead(path=path, size=len(data), encoding="utf-8", content=data.decode())
        except UnicodeDecodeError:
            content = base64.b64encode(data).decode("ascii")
            return FileRead(path=path, size=len(data), encoding="base64", content=content)

    @tool(RUNS, title="Write a guest file", profiles={"workspace": 13, "full": 26})
    async def task_file_write(
        self,
        task_id: TaskId,
        path: GuestPath,
        content: Annotated[str, Field(description=f"The data (at most {WRITE_MAX} bytes).")],
        encoding: Annotated[Encoding, Field(description="How content is encoded.")] = "utf-8",
        mode: Annotated[
            int, Field(description="File mode, e.g. 493 (0755).", ge=0, le=0o7777)
        ] = 0o644,
    ) -> TaskFileWritten:
        """Write a guest file atomically; parent folders are made."""
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise UsageError(
                    "task_file_write: content is not base64",
                    "send base64 (RFC 4648) with encoding 'base64', or text with 'utf-8'",
                ) from None
        else:
            data = content.encode()
        if len(data) > WRITE_MAX:
            raise LimitError(
                f"task_file_write: content is {len(data)} bytes, more than {WRITE_MAX}",
                "put the file in a host folder inside the root and use task_sync_push",
            )
        return await self._call(
            lambda token: self.sdk.write_task_file(task_id, path, data, mode=mode)
        )

    @tool(RUNS, title="Copy a host folder in", profiles={"workspace": 14, "full": 27})
    async def task_sync_push(
        self,
        task_id: TaskId,
        source: Annotated[str, Field(description="Host folder inside the server's root.")],
        dest: Annotated[str, Field(description="Guest folder.")] = "/workspace",
        roots: ClientRoots = None,
    ) -> SyncResult:
        """Copy a host folder into the task (symlinks leaving it are refused)."""
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).push_task_dir(
                task_id, source, dest=dest
            )
        )

    @tool(RUNS, title="Copy guest files out", profiles={"workspace": 15, "full": 28})
    async def task_export(
        self,
        task_id: TaskId,
        path: GuestPath,
        output: Annotated[
            str, Field(description="Host path inside the server's root (relative: from it).")
        ],
        roots: ClientRoots = None,
    ) -> SyncResult:
        """Copy a guest file or folder to the host, into a new .pyro-artifacts/ folder
        under the root at output's relative path (dest says where); never over host files;
        git metadata is skipped.
        """
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).export_task_path(task_id, path, output)
        )

    @tool(CHANGES_LOCAL, title="Snapshot a task's disk", profiles={"workspace": 16, "full": 29})
    async def task_snapshot_create(self, task_id: TaskId, name: SnapshotName) -> SnapshotInfo:
        """Snapshot the task's disk (the VM keeps running); task_reset goes back to it."""
        return await self._call(lambda token: self.sdk.create_task_snapshot(task_id, name))

    @tool(READ_ONLY, title="List snapshots", profiles={"workspace": 17, "full": 30})
    async def task_snapshot_list(self, task_id: TaskId) -> SnapshotList:
        """A task's snapshots, oldest first ('baseline': as created)."""
        found = await self._call(lambda token: self.sdk.list_task_snapshots(task_id))
        return SnapshotList(snapshots=found)

    @tool(
        DESTRUCTIVE,
        title="Delete a snapshot",
        profiles={"workspace": 18, "full": 31},
        idempotent=True,
    )
    async def task_snapshot_delete(self, task_id: TaskId, name: SnapshotName) -> SnapshotDeleted:
        """Delete a snapshot; deleted=false when there was none."""
        deleted = await self._call(lambda token: self.sdk.delete_task_snapshot(task_id, name))
        return SnapshotDeleted(name=name, deleted=deleted)

    @tool(DESTRUCTIVE, title="Reset a task's disk", profiles={"workspace": 19, "full": 32})
    async def task_reset(
        self,
        task_id: TaskId,
        snapshot: Annotated[str, Field(description="Snapshot name.")] = "baseline",
    ) -> TaskBrief:
        """Put the disk back to a snapshot (default: as created) and boot; later changes
        are lost, the journal stays.
        """

        def work(token: Cancellation) -> TaskInfo:
            token.track(task_id)
            return self.sdk.reset_task(task_id, snapshot=snapshot)

        return TaskBrief.of(await self._call(work, undo=self.sdk.stop_task))
