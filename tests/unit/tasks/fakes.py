"""A fake guest agent and a registry whose VMs are fakes: for unit tests of task logic only.

The fake agent keeps a guest filesystem in a dict and understands the few commands task
logic sends itself (mkdir -p, ln -sfn, sync) plus ``env``/``echo``/``false``/``pwd``.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from pyro.errors import GuestError, GuestPathError, LimitError
from pyro.guest.client import ExecResult, GuestStat
from pyro.machines.registry import VMRecord, VMRegistry, VMState


class FakeGuest:
    """The guest's state: survives reconnects like a real disk does."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.dirs: set[str] = {"/"}
        self.links: dict[str, str] = {}
        self.execs: list[tuple[list[str], dict[str, str], str | None]] = []
        self.synced: list[bool] = []

    def mkdirs(self, path: str) -> None:
        while path not in self.dirs:
            self.dirs.add(path)
            path = posixpath.dirname(path)


class FakeAgent:
    """Implements the AgentClient calls tasks use, against a FakeGuest."""

    def __init__(self, guest: FakeGuest) -> None:
        self.guest = guest
        self.closed = False

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | None = None,
        timeout_s: float | None = None,
        stdout_cap: int = 1 << 20,
        stderr_cap: int = 1 << 20,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
        sync: bool = False,
        uid: int | None = None,
        gid: int | None = None,
    ) -> ExecResult:
        # uid/gid: this fake runs everything as the test's own user.
        self.guest.synced.append(sync)
        argv = list(argv)
        env = dict(env or {})
        self.guest.execs.append((argv, env, cwd))
        out, err, code = b"", b"", 0
        if argv[:2] == ["mkdir", "-p"]:
            for path in argv[3:]:
                self.guest.mkdirs(path)
        elif argv[:2] == ["ln", "-sfn"]:
            self.guest.links[argv[4]] = argv[3]
        elif argv[0] == "env":
            out = "".join(f"{k}={v}\n" for k, v in sorted(env.items())).encode()
        elif argv[0] == "echo":
            out = (" ".join(argv[1:]) + "\n").encode()
        elif argv[0] == "pwd":
            out = f"{cwd}\n".encode()
        elif argv[0] == "false":
            code = 1
        elif argv[0] == "interrupt":
            raise KeyboardInterrupt
        elif argv[0] == "crash":
            raise GuestError("guest agent connection closed (crash: test)")
        elif argv[0] == "fail-stderr":
            err, code = b"boom\n", 3
        for sink, data in ((on_stdout, out), (on_stderr, err)):
            if sink is not None and data:
                sink(data[: len(data) // 2])  # two chunks, to exercise stream redaction
                sink(data[len(data) // 2 :])
        return ExecResult(
            exit_code=code,
            signal=None,
            timed_out=False,
            stdout=out[:stdout_cap],
            stderr=err[:stderr_cap],
            stdout_truncated=len(out) > stdout_cap,
            stderr_truncated=len(err) > stderr_cap,
            duration_s=0.001,
        )

    def put_file(self, guest_path: str, src: BinaryIO | Path, *, mode: int = 0o644) -> int:
        data = src.read_bytes() if isinstance(src, Path) else src.read()
        self.guest.mkdirs(posixpath.dirname(guest_path))
        self.guest.files[guest_path] = data
        self.guest.modes[guest_path] = mode
        return len(data)

    def get_file(self, guest_path: str, dst: BinaryIO, *, max_bytes: int | None = None) -> int:
        if guest_path not in self.guest.files:
            raise GuestPathError(f"cannot read {guest_path} in the guest: No such file")
        data = self.guest.files[guest_path]
        if max_bytes is not None and len(data) > max_bytes:
            raise LimitError(f"guest file {guest_path} is larger than {max_bytes} bytes")
        dst.write(data)
        return len(data)

    def stat(self, guest_path: str) -> GuestStat:
        name = posixpath.basename(guest_path)
        if guest_path in self.guest.files:
            data = self.guest.files[guest_path]
            return GuestStat(
                name, "f", 0o100000 | self.guest.modes[guest_path], len(data), 0, 0, 0, None
            )
        if guest_path in self.guest.dirs:
            return GuestStat(name, "d", 0o40755, 0, 0, 0, 0, None)
        if guest_path in self.guest.links:
            return GuestStat(name, "l", 0o120777, 0, 0, 0, 0, self.guest.links[guest_path])
        raise GuestPathError(f"cannot get the stat of {guest_path}: No such file or directory")

    def list_dir(self, guest_path: str) -> list[GuestStat]:
        if guest_path not in self.guest.dirs:
            raise GuestPathError(f"cannot get the listing of {guest_path}: Not a directory")
        names = {
            p
            for p in (*self.guest.files, *self.guest.dirs, *self.guest.links)
            if p != guest_path and posixpath.dirname(p) == guest_path
        }
        return sorted((self.stat(p) for p in names), key=lambda s: s.name)

    def shutdown(self, *, timeout_s: float = 5.0) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FakeRegistry(VMRegistry):
    """The real on-disk registry, with start/connect/stop served by fake guests."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.guests: dict[str, FakeGuest] = {}
        self.starts = 0

    def start(
        self,
        vm_id: str,
        *,
        boot_timeout: float = 60.0,
        data_disk: Any = None,
        spare_disk: Any = None,  # attached but never swapped: unit tests push small trees
        shared_ram: bool = False,
        hostname: str | None = None,
    ) -> tuple[VMRecord, Any]:
        assert data_disk is None, "the fake guest has no disks (real guests test data disks)"
        with self.locked(vm_id):
            record = self.get(vm_id)
            if record.state is VMState.RUNNING:
                from pyro.errors import StateError

                raise StateError(f"VM {vm_id} is already running")
            record = record.model_copy(
                update={"state": VMState.RUNNING, "started_at": time.time(), "reason": ""}
            )
            self.save(record)
            self.starts += 1
            return record, FakeAgent(self.guests.setdefault(vm_id, FakeGuest()))

    def connect(self, vm_id: str, *, timeout: float = 10.0) -> Any:
        record = self.get(vm_id)
        if record.state is not VMState.RUNNING:
            from pyro.errors import StateError

            raise StateError(f"VM {vm_id} is not running")
        return FakeAgent(self.guests.setdefault(vm_id, FakeGuest()))

    def stop(
        self, vm_id: str, *, timeout: float = 10.0, reason: str = "stopped by user"
    ) -> VMRecord:
        record = self.get(vm_id).model_copy(
            update={"handle": None, "state": VMState.STOPPED, "reason": reason}
        )
        self.save(record)
        return record

    def new_task(self, **fields: Any) -> VMRecord:
        """A task record as create() would make it (no environment needed)."""
        defaults: dict[str, Any] = {
            "environment": "debian:12",
            "environment_digest": "sha256:0",
            "kernel": Path("/nonexistent/vmlinux"),
            "initrd": Path("/nonexistent/agent.cpio"),
            "rootfs": Path("/nonexistent/rootfs.ext4"),
            "backend": "qemu-tcg",
            "vcpus": 1,
            "memory_mib": 256,
            "kind": "task",
        }
        defaults.update(fields)
        return self.create(**defaults)


class FakeSessions:
    """The keeper seen from the manager (pyro.tasks.session.KeeperSessions), with fake
    guests: a "keeper" runs from start() until end(); busy while a connection is open."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.running: set[str] = set()
        self.open: dict[str, int] = {}
        self.started = 0

    def _client(self, task_id: str) -> Any:
        agent = self.registry.connect(task_id)
        self.open[task_id] = self.open.get(task_id, 0) + 1
        close = agent.close

        def closed() -> None:
            self.open[task_id] -= 1
            close()

        agent.close = closed
        return agent

    def connect(self, task_id: str) -> Any:
        return self._client(task_id) if task_id in self.running else None

    def start(self, task_id: str, lock_file: Path) -> Any:
        assert lock_file.exists()  # the manager holds the session lock
        self.running.add(task_id)
        self.started += 1
        return self._client(task_id)

    def busy(self, task_id: str) -> bool:
        return self.open.get(task_id, 0) > 0

    def end(self, task_id: str) -> None:
        self.running.discard(task_id)
