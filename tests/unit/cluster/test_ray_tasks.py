"""Tier 0 of cluster task workspaces: routing errors, error rebuilding, owner labels."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyro.cluster import ray_exec, task_host
from pyro.cluster.ray_tasks import ClusterTasks, _Node, _rebuilt
from pyro.cluster.task_host import TaskHost, _process_id, reap_orphans
from pyro.errors import GuestPathError, NotFoundError, PyroError, SpecError


class _Connected:
    """A Ray module already joined: ``init`` must not be called again."""

    def is_initialized(self) -> bool:
        return True

    def init(self, **kwargs: Any) -> None:
        raise AssertionError("joined twice")


def test_joining_a_cluster_this_process_already_joined_keeps_that_connection() -> None:
    assert ray_exec._init(_Connected(), "ray://127.0.0.1:6379") is False


def test_a_task_this_client_did_not_place_is_not_found_before_any_ray_call() -> None:
    with pytest.raises(NotFoundError, match="not one this client placed"):
        ClusterTasks("ray://127.0.0.1:6379").call("t-nope", "status")


def test_a_nodes_error_comes_back_as_its_own_class_with_its_hint() -> None:
    error = _rebuilt({"type": "GuestPathError", "message": "no such file", "hint": "look"})
    assert type(error) is GuestPathError and error.summary == "no such file"
    assert error.hint == "look"
    # A class with another constructor (or a made-up name) is a plain PyroError.
    for kind in (SpecError.__name__, "NotAPyroError", "os"):
        error = _rebuilt({"type": kind, "message": "m", "hint": "h"})
        assert type(error) is PyroError and error.summary == "m"


def test_an_owner_label_names_a_living_process_and_not_a_reused_pid() -> None:
    mine = _process_id(os.getpid())
    assert mine is not None and mine.startswith(f"{os.getpid()}-")
    assert _process_id(os.getpid()) == mine  # stable for the process
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert _process_id(int(child.stdout)) is None  # gone


def test_the_actor_refuses_a_task_it_does_not_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    watched: list[int] = []
    monkeypatch.setattr(task_host, "_watch", watched.append)  # no watcher of pytest itself
    host = TaskHost()
    assert watched == [os.getpid()]
    with pytest.raises(NotFoundError, match="not one this client placed on this node"):
        host.status("t-other")
    assert host.close() == []
    assert reap_orphans() == []


def test_a_seed_or_pushed_tree_is_unpacked_on_the_node_with_every_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import tarfile

    from pyro.cluster.task_host import _unpacked

    def tar_of(name: str, kind: bytes, size: int = 0) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, size
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info, io.BytesIO(b"z" * size) if size else None)
        return buffer.getvalue()

    for hostile in (tar_of("../up", tarfile.REGTYPE), tar_of("l", tarfile.SYMTYPE)):
        with pytest.raises(PyroError, match="refused entry"), _unpacked(hostile):
            pass
    monkeypatch.setenv("PYRO_TASK_SEED_MAX_MB", "1")
    with (
        pytest.raises(PyroError, match="bytes in all"),
        _unpacked(tar_of("big", tarfile.REGTYPE, (1 << 20) + 1)),
    ):
        pass
    with _unpacked(tar_of("ok.txt", tarfile.REGTYPE, 3)) as folder:
        assert folder is not None and (Path(folder) / "ok.txt").read_bytes() == b"zzz"


def test_the_watcher_reaps_once_the_watched_process_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reaped: list[bool] = []
    monkeypatch.setattr(task_host, "reap_orphans", lambda: reaped.append(True) or [])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    task_host._watch_then_reap(child.pid, poll_s=0.05)
    assert child.poll() is not None or child.wait(5) == 0
    assert reaped == [True]


class _LyingActorMethod:
    """``actor.METHOD.remote(...)``: the object ref is the (scripted) answer itself."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def remote(self, *args: Any) -> Any:
        return self.answer


class _LyingRay:
    """Ray as the controller sees it, ``get`` handing back what a lying node answered."""

    class exceptions:  # Ray's own name
        GetTimeoutError = TimeoutError
        RayTaskError = RuntimeError

    def get(self, ref: Any, timeout: float) -> Any:
        return ref


def _lying_node(tasks: ClusterTasks, **answers: Any) -> _Node:
    actor = type("Actor", (), {k: _LyingActorMethod(v) for k, v in answers.items()})()
    node = _Node("n" * 40, "10.0.0.9", actor)
    tasks._ray = _LyingRay()
    tasks._place = lambda resource: node  # type: ignore[method-assign]
    return node


@pytest.mark.parametrize("answer", [{"id": "../../x"}, {"id": 7}, ["t1"], {"id": "t-placed"}])
def test_a_lying_node_cannot_name_a_task_it_does_not_hold(answer: Any) -> None:
    tasks = ClusterTasks("ray://127.0.0.1:6379")
    honest = _Node("h" * 40, "10.0.0.1", object())
    tasks._where["t-placed"] = honest
    _lying_node(tasks, create=answer)
    with pytest.raises(PyroError, match="answered with"):
        tasks.create(None, "debian:12", {}, {}, None)
    assert tasks._where == {"t-placed": honest}  # its routing is not taken over


@pytest.mark.parametrize(
    "item", [("stdout", "text, not bytes"), ("stdin", b"x"), ("done", "ok"), "garbage"]
)
def test_a_lying_node_cannot_stream_what_is_not_output(item: Any) -> None:
    tasks = ClusterTasks("ray://127.0.0.1:6379")
    node = _lying_node(tasks, exec=iter([item]))
    tasks._where["t1"] = node
    got: list[bytes] = []
    with pytest.raises(PyroError, match="answered with"):
        tasks.exec("t1", ["true"], {}, got.append, got.append)
    assert got == []


class _LyingTasks:
    """A ClusterTasks whose node answers every call with ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def call(self, task_id: str, method: str, *args: Any) -> Any:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "call"),
    [
        (b"x" * 100, lambda p: p.read_task_file("t1", "f", max_bytes=10)),  # ignores the cap
        ("not bytes", lambda p: p.read_task_file("t1", "f")),
        ("not a listing", lambda p: p.list_task_files("t1", "/w")),
        ([{"name": 1}], lambda p: p.list_task_files("t1", "/w")),
        ({"id": "t1"}, lambda p: p.status_task("t1")),
        ([{"at": "never"}], lambda p: p.logs_task("t1")),
        ({"bytes": "many"}, lambda p: p.write_task_file("t1", "f", b"x")),
    ],
    ids=["read-past-cap", "read-not-bytes", "list-not-list", "list-bad", "status", "logs", "write"],
)
def test_a_lying_node_answer_is_refused_not_used(answer: Any, call: Callable[[Any], Any]) -> None:
    import pyro

    client = pyro.Pyro(cluster="ray://127.0.0.1:6379")
    client._cluster_tasks = _LyingTasks(answer)  # type: ignore[assignment]
    with pytest.raises(PyroError, match="answered with") as caught:
        call(client)
    assert type(caught.value) is PyroError
