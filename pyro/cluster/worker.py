"""What a cluster node does with one instance: re-plan it here, check the pins, apply it.

A plan depends on its host (KVM, backends, warm snapshots, cache), so the node plans the
Run spec it was sent for itself, in a fresh folder holding the copy-in files the
controller shipped. It refuses (:class:`~pyro.errors.StalePlanError`, nothing boots) when
its plan resolves the environment to anything but the digest the controller pinned, or a
copy-in source to other content. The environment reaches the node by OCI pull into its
own cache. Artifacts are copied into that folder and sent back as one tar. This module
imports no Ray: the executor hands it its arguments and takes its return value.
"""

from __future__ import annotations

import _thread
import contextlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pyro.errors import PyroError, StalePlanError
from pyro.machines.copyout import BYTES_ENV, DEPTH_ENV, ENTRIES_ENV, CopyLimits

#: Each instance's scratch folder in the temp folder: ``pyro-instance-PID-TICKS-…``.
SCRATCH_PREFIX = "pyro-instance-"


def pack(folder: Path, names: list[str] | None = None) -> bytes:
    """``folder`` (or only ``names`` in it) as an uncompressed tar, paths relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(names if names is not None else [p.name for p in folder.iterdir()]):
            tar.add(folder / name, arcname=name)
    return buffer.getvalue()


def artifact_targets(steps: Iterable[object]) -> list[str]:
    """The host paths (relative to the spec's folder) a plan's copy-out steps write."""
    from pyro.execute.transfer import artifact_target
    from pyro.plan.model import CopyOutStep

    return [artifact_target(s.source, s.target) for s in steps if isinstance(s, CopyOutStep)]


def unpack(
    data: bytes | Path,
    folder: Path,
    *,
    only: list[str] | None = None,
    limits: CopyLimits | None = None,
    max_bytes: int | None = None,
) -> None:
    """Extract a tar made by :func:`pack` (its bytes, or a file) into ``folder``: regular
    files and folders only, each inside ``folder`` (no absolute path, no ``..``, no link, no
    device, no sparse file, never through a symlink already in ``folder``), modes kept to
    their permission bits; at most ``max_bytes`` of file content in all (a copy-in on a node).

    ``only`` (a node's artifacts, taken in on the controller): each entry must be one of
    these paths (:func:`artifact_targets`), below one, or a folder on the way to one; none
    may be git metadata, and the tar is held to ``limits`` (default: the
    ``$PYRO_COPY_OUT_MAX_*`` caps a local copy-out has). Every entry is checked before
    the first is written.

    Raises:
        PyroError: the tar is broken or holds anything else.  LimitError: it passes a cap.
    """
    try:
        _unpack(data, folder, only, limits, max_bytes)
    except tarfile.TarError as exc:
        raise PyroError(
            f"a transferred tar is broken: {exc}",
            "the node is broken or hostile; nothing more of its tar was taken in",
        ) from exc


def _unpack(
    data: bytes | Path,
    folder: Path,
    only: list[str] | None,
    limits: CopyLimits | None,
    max_bytes: int | None,
) -> None:
    """:func:`unpack`; raises tarfile.TarError on a broken tar."""
    where: dict[str, Any] = (
        {"name": data} if isinstance(data, Path) else {"fileobj": io.BytesIO(data)}
    )
    with tarfile.open(mode="r:", **where) as tar:
        if limits is None and only is not None:
            limits = CopyLimits.from_env()
        members = _checked(tar, only, limits, max_bytes)
        for member, parts in members:
            target = folder.joinpath(*parts)
            through = [folder.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
            if any(path.is_symlink() for path in through):
                raise PyroError(
                    f"refused entry {member.name!r}: a symlink is in its way in {folder}",
                    "remove the symlink; artifacts are never written through one",
                )
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True, mode=0o755)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with source, open(fd, "wb") as sink:
                shutil.copyfileobj(source, sink)
            target.chmod(member.mode & 0o777)


def _checked(
    tar: tarfile.TarFile, only: list[str] | None, limits: CopyLimits | None, max_bytes: int | None
) -> list[tuple[tarfile.TarInfo, tuple[str, ...]]]:
    """Every member with its path parts, once all passed :func:`unpack`'s checks.

    Raises:
        PyroError: a refused entry.  LimitError: a cap passed.
    """
    from pyro.spec.gitmeta import has_git_part, looks_like_git_dir

    members: list[tuple[tarfile.TarInfo, tuple[str, ...]]] = []
    names: dict[tuple[str, ...], set[str]] = {}
    size = total = 0
    for member in tar:
        total += member.size if member.isfile() else 0
        if max_bytes is not None and total > max_bytes:
            raise PyroError(
                f"refused entry {member.name!r} of a transferred tar: its files pass "
                f"{max_bytes} bytes in all",
                "copy less into the run, or raise PYRO_CLUSTER_COPY_IN_MAX_MB on the node",
            )
        parts = PurePosixPath(member.name).parts
        if (
            member.name.startswith("/")
            or ".." in parts
            or not (member.isfile() or member.isdir())
            or member.issparse()  # its map could expand a few bytes to terabytes
        ):
            raise PyroError(
                f"refused entry {member.name!r} of a transferred tar",
                "only files and folders inside the run's folder travel between nodes",
            )
        if limits is not None:
            size += member.size if member.isfile() else 0
            _check_caps(member, len(members) + 1, size, limits)
        if only is not None:
            _check_planned(member, "/".join(parts), only, limits or CopyLimits())
            if has_git_part("/".join(parts)):
                raise PyroError(
                    f"refused entry {member.name[:200]!r} of a node's artifacts: git "
                    "metadata is never written on the host (a hook would run commands)",
                    "copy git metadata out as an archive if needed",
                )
            names.setdefault(parts[:-1], set()).add(parts[-1] if parts else "")
        members.append((member, parts))
    for folder, listed in names.items():
        if looks_like_git_dir(listed):
            raise PyroError(
                f"refused folder {'/'.join(folder) or '.'!r} of a node's artifacts: it is "
                "laid out as a .git folder (a hook there would run commands)",
                "copy git metadata out as an archive if needed",
            )
    return members


def _check_caps(member: tarfile.TarInfo, entries: int, size: int, limits: CopyLimits) -> None:
    """Raises: LimitError: ``entries`` or ``size`` (so far, this member's included) pass
    the copy-out caps."""
    from pyro.errors import LimitError

    if entries > limits.max_entries:
        raise LimitError(
            f"a node's tar has more than {limits.max_entries} entries (the copy-out entry limit)",
            f"copy out an archive instead, or raise {ENTRIES_ENV}",
        )
    if size > limits.max_bytes:
        raise LimitError(
            f"a node's tar would write more than {limits.max_bytes} bytes (the copy-out byte "
            f"limit; reached at {member.name[:200]!r})",
            f"copy out an archive or a smaller folder, or raise {BYTES_ENV}",
        )


def _check_planned(member: tarfile.TarInfo, path: str, only: list[str], limits: CopyLimits) -> None:
    """Raises: PyroError: ``path`` is none of ``only``, below one or a folder on the way
    to one.  LimitError: it nests deeper below its target than ``limits`` allow."""
    from pyro.errors import LimitError

    below = [t for t in only if t == "." or path == t or path.startswith(t + "/")]
    on_the_way = member.isdir() and any(t.startswith(path + "/") for t in only if path)
    if not below and not on_the_way:
        raise PyroError(
            f"refused entry {member.name[:200]!r} of a node's artifacts: not an artifact "
            "this run planned",
            "the node is broken or hostile; its artifacts were not taken in",
        )
    if below:
        deepest = max(0 if t == "." else len(t.split("/")) for t in below)
        levels = len(path.split("/")) - deepest - (0 if member.isdir() else 1)
        if levels > limits.max_depth:
            raise LimitError(
                f"a node's artifact {member.name[:200]!r} nests folders more than "
                f"{limits.max_depth} levels deep (the copy-out depth limit)",
                f"copy out an archive instead, or raise {DEPTH_ENV}",
            )


def run_instance(payload: dict[str, Any], files: bytes | dict[str, Any]) -> dict[str, Any]:
    """Plan and apply one instance on this node; never raises for a pyro failure (the
    result says it).

    ``payload``: ``spec`` (the instance's Run spec, pinned environment), ``name``,
    ``environment`` (the pinned ``oci://…@sha256:`` reference), ``sources``
    (copy-in source → content digest, as the controller planned them).
    ``files``: the copy-in tar, or a copy-in artifact to pull (:func:`pyro.cluster.copyin.fetch`).
    Returns ``result`` (a RunResult's JSON), ``artifacts`` (a tar) and ``node``.
    """
    from pyro.execute.result import RunResult
    from pyro.process.identity import start_ticks

    reap_scratch()  # what a worker killed with its node left here (its VM: apply reaps)
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-{start_ticks(os.getpid())}-"
    with _ends_with_parent(), tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        base = Path(scratch) / "spec"
        out = Path(scratch) / "out"
        base.mkdir()
        out.mkdir()
        try:
            _unpack_copy_ins(files, base)
            result = _apply(payload, base, out)
        except PyroError as error:
            result = RunResult(
                ok=False,
                name=str(payload["name"]),
                plan_digest="",
                environment=str(payload["environment"]),
                environment_digest=None,
                backend=None,
                vm_id=None,
                exit_code=None,
                error=error.to_dict(),
                duration_ms=0,
                steps=[],
            )
        artifacts = pack(out) if any(out.iterdir()) else b""
    return {"result": result.model_dump(mode="json"), "artifacts": artifacts}


@contextlib.contextmanager
def _ends_with_parent(period: float = 1.0) -> Iterator[None]:
    """Interrupt this run once the process that started this worker, the node's raylet,
    is gone, as Ray's own cancel does (a KeyboardInterrupt in the main thread, where Ray
    runs a task; its VM is deleted): a node lost to the cluster (killed, cut off) runs
    no orphan guest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    parent, stop = os.getppid(), threading.Event()

    def watch() -> None:
        while not stop.wait(period):
            if os.getppid() != parent:
                _thread.interrupt_main()
                return

    watcher = threading.Thread(target=watch, name="pyro-parent-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _unpack_copy_ins(files: bytes | dict[str, Any], base: Path) -> None:
    from pyro.cluster.copyin import copy_in_max_bytes

    if isinstance(files, bytes):
        unpack(files, base, max_bytes=copy_in_max_bytes())
        return
    from pyro.cluster.copyin_cache import held
    from pyro.paths import cache_dir

    with held(files, cache_dir() / "cluster-copy-in") as tar:
        unpack(tar, base, max_bytes=copy_in_max_bytes())


def _apply(payload: dict[str, Any], base: Path, out: Path) -> Any:
    from pyro.execute.apply import ApplyOptions, apply
    from pyro.execute.prepare import Prepared, make_plan
    from pyro.plan.model import CopyInStep
    from pyro.spec.load import LoadedSpec
    from pyro.spec.model import RunSpec

    spec = RunSpec.model_validate(payload["spec"])
    loaded = LoadedSpec(spec, None, base, 0, str(payload["name"]))
    plan = make_plan(Prepared(loaded, instance=str(payload["name"])))
    pinned = str(payload["environment"])
    environment = plan.environment
    if environment is None or environment.ref != pinned or environment.origin == "build":
        found = "nothing" if environment is None else f"{environment.ref} ({environment.origin})"
        raise StalePlanError(
            f"this node resolves the environment to {found}, not {pinned}",
            "push the environment to a registry every node reaches ('pyro env push') and "
            "apply again",
        )
    sources: dict[str, str | None] = payload.get("sources", {})
    for step in plan.steps:
        if isinstance(step, CopyInStep) and step.digest != sources.get(step.source):
            raise StalePlanError(
                f"copy-in source {step.source!r} arrived with other content than was planned",
                "apply again; do not change the sources while an apply runs",
            )
    made: list[str] = []

    def on_event(group: str, phase: str, fields: Mapping[str, str]) -> None:
        vm_id = fields.get("vm_id")
        if vm_id and vm_id not in made:
            made.append(vm_id)

    try:
        return apply(plan, ApplyOptions(artifacts_dir=out, on_event=on_event))
    except BaseException:  # cancelled (Ray raises KeyboardInterrupt here): leave no VM
        _delete(made)
        raise


def _delete(vm_ids: list[str]) -> None:
    from pyro.machines.registry import VMRegistry

    registry = VMRegistry()
    for vm_id in vm_ids:
        with contextlib.suppress(PyroError):
            registry.delete(vm_id)


def reap() -> int:
    """Delete what dead runs left on this node: their VMs (the next pyro command would
    too) and their scratch folders; returns how many."""
    from pyro.machines.registry import VMRegistry

    return len(VMRegistry().reap()) + len(reap_scratch())


def reap_scratch() -> list[str]:
    """Remove the scratch folders (``pyro-instance-PID-TICKS-…`` in the temp folder) of
    workers that are gone, e.g. killed with their node; only this user's real folders."""
    from pyro.process.identity import process_alive

    reaped = []
    with contextlib.suppress(OSError):
        for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
            parts = path.name[len(SCRATCH_PREFIX) :].split("-")
            try:
                pid, ticks = int(parts[0]), float(parts[1])
                info = path.lstat()
            except (IndexError, ValueError, OSError):
                continue
            mine = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            if mine and not process_alive(pid, ticks):
                shutil.rmtree(path, ignore_errors=True)
                reaped.append(path.name)
    return reaped
