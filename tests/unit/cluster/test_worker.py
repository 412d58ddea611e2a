"""The tars copy-ins and artifacts travel in between controller and nodes: what unpacks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pyro.cluster.worker import artifact_targets, pack, unpack
from pyro.errors import LimitError, PyroError
from pyro.machines.copyout import CopyLimits
from pyro.plan.model import CopyOutStep


def test_files_and_folders_round_trip_with_their_modes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "out" / "deep").mkdir(parents=True)
    (source / "out" / "deep" / "r.txt").write_text("hi\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    (source / "skip.txt").write_text("not asked for\n")
    target = tmp_path / "dst"
    target.mkdir()
    unpack(pack(source, ["out", "run.sh"]), target)
    assert (target / "out" / "deep" / "r.txt").read_text() == "hi\n"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755
    assert not (target / "skip.txt").exists()


def hostile(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, 0 if kind != tarfile.REGTYPE else 2
        tar.addfile(info, io.BytesIO(b"x\n") if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        hostile("/etc/evil"),
        hostile("../escape"),
        hostile("a/../../escape"),
        hostile("link", tarfile.SYMTYPE, "/etc/passwd"),
        hostile("hard", tarfile.LNKTYPE, "/etc/passwd"),
        hostile("dev", tarfile.CHRTYPE),
        hostile("fifo", tarfile.FIFOTYPE),
    ],
)
def test_anything_but_files_and_folders_inside_is_refused(tmp_path: Path, data: bytes) -> None:
    target = tmp_path / "dst"
    target.mkdir()
    with pytest.raises(PyroError, match="refused entry"):
        unpack(data, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_nothing_is_written_through_a_symlink_already_in_the_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "out").mkdir(parents=True)
    (source / "out" / "r.txt").write_text("hi\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "dst"
    target.mkdir()
    (target / "out").symlink_to(elsewhere)
    with pytest.raises(PyroError, match="a symlink is in its way"):
        unpack(pack(source, ["out"]), target)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("pax", [False, True], ids=["gnu-sparse", "pax-sparse"])
def test_a_sparse_member_cannot_expand_on_the_controller(tmp_path: Path, pax: bool) -> None:
    """A hostile node's 2 KiB tar declaring a 64 MiB sparse file writes nothing."""
    from helpers.hostile_tars import sparse_bomb

    target = tmp_path / "dst"
    target.mkdir()
    with pytest.raises(PyroError, match="refused entry"):
        unpack(sparse_bomb("bomb", 64 << 20, pax=pax), target)
    assert list(target.iterdir()) == []


def tar_of(members: dict[str, bytes | None]) -> bytes:
    """A tar a node could send: each name a file of those bytes, or a folder (None)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_controller_takes_only_the_planned_artifact_targets(tmp_path: Path) -> None:
    """A hostile node's tar holding the planned ``out/`` and a new spec file: refused, the
    spec folder's own files untouched."""
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "pyro.yaml").write_text("mine\n")
    steps = [CopyOutStep(id="s1", source="/work/out", target="dist/")]
    only = artifact_targets(steps)
    assert only == ["dist/out"]
    good = {"dist": None, "dist/out": None, "dist/out/r.txt": b"hi\n"}
    unpack(tar_of(good), spec_dir, only=only)
    assert (spec_dir / "dist/out/r.txt").read_text() == "hi\n"
    with pytest.raises(PyroError, match="not an artifact this run planned"):
        unpack(tar_of({**good, "pyro.yaml": b"evil\n"}), spec_dir, only=only)
    assert (spec_dir / "pyro.yaml").read_text() == "mine\n"
    with pytest.raises(PyroError, match="not an artifact this run planned"):
        unpack(tar_of({"dist/other": b"x"}), spec_dir, only=only)
    assert not (spec_dir / "dist/other").exists()


def test_the_controller_never_writes_git_metadata(tmp_path: Path) -> None:
    """Even an artifact copied to the spec folder itself brings no ``.git`` hook along."""
    spec_dir = tmp_path / "spec"
    (spec_dir / ".git" / "hooks").mkdir(parents=True)
    only = artifact_targets([CopyOutStep(id="s1", source="/work", target=".")])
    with pytest.raises(PyroError, match=r"\.git"):
        unpack(tar_of({".git/hooks/post-checkout": b"#!/bin/sh\nrm -rf ~\n"}), spec_dir, only=only)
    assert list((spec_dir / ".git" / "hooks").iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "members", "match"),
    [
        (CopyLimits(max_entries=3), {f"out/{i}": b"x" for i in range(5)}, "entries"),
        (CopyLimits(max_bytes=1000), {"out/a": b"x" * 600, "out/b": b"y" * 600}, "bytes"),
        (CopyLimits(max_depth=2), {"out/a/b/c/d": b"x"}, "levels"),
    ],
    ids=["entries", "bytes", "depth"],
)
def test_the_controller_holds_the_copy_out_caps(
    tmp_path: Path, limits: CopyLimits, members: dict[str, bytes | None], match: str
) -> None:
    """A node's tar is held to the same ``$PYRO_COPY_OUT_MAX_*`` caps as a local copy-out;
    the refused entry is not written."""
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    with pytest.raises(LimitError, match=match):
        unpack(tar_of(members), spec_dir, only=["out"], limits=limits)
    assert not (spec_dir / "out" / "b").exists()
    assert not (spec_dir / "out" / "4").exists()


def test_a_refused_artifact_tar_fails_its_instance_and_writes_nothing(tmp_path: Path) -> None:
    """What the Ray executor does with a node's reply: a hostile tar is the instance's
    error (ok false), nothing of it lands, and a good one lands at its planned target."""
    from types import SimpleNamespace
    from typing import Any, cast

    from pyro.cluster.ray_exec import _take_artifacts
    from pyro.execute.result import RunResult

    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "pyro.yaml").write_text("mine\n")
    steps = [CopyOutStep(id="s1", source="/work/out", target="out")]
    job = cast(Any, SimpleNamespace(plan=SimpleNamespace(steps=steps, spec_dir=str(spec_dir))))

    def result() -> RunResult:
        return RunResult(
            ok=True, name="i", plan_digest="", environment="e", environment_digest=None,
            backend=None, vm_id=None, exit_code=0, duration_ms=0, steps=[],
        )  # fmt: skip

    hostile = result()
    _take_artifacts(job, hostile, tar_of({"out/r.txt": b"hi\n", "pyro.yaml": b"evil\n"}))
    assert not hostile.ok
    assert "not an artifact this run planned" in str(hostile.error)
    assert (spec_dir / "pyro.yaml").read_text() == "mine\n"
    assert not (spec_dir / "out").exists()
    honest = result()
    _take_artifacts(job, honest, tar_of({"out": None, "out/r.txt": b"hi\n"}))
    assert honest.ok
    assert (spec_dir / "out/r.txt").read_text() == "hi\n"


def test_a_confined_callers_node_artifacts_land_in_a_fresh_folder(tmp_path: Path) -> None:
    """Pyro(confine_to=..., cluster=...): a node's artifacts go where a local confined run's
    go, a new folder under the root that the result names, never over the root's files."""
    from types import SimpleNamespace
    from typing import Any, cast

    from pyro.cluster.ray_exec import _take_artifacts
    from pyro.execute.result import RunResult
    from pyro.host.confine import Root

    base = tmp_path / "root"
    base.mkdir()
    (base / "out").write_text("the user's own file\n")
    steps = [CopyOutStep(id="s1", source="/work/out", target="out")]
    job = cast(
        Any, SimpleNamespace(name="ci", plan=SimpleNamespace(steps=steps, spec_dir=str(base)))
    )
    result = RunResult(
        ok=True, name="ci", plan_digest="", environment="e", environment_digest=None,
        backend=None, vm_id=None, exit_code=0, duration_ms=0, steps=[],
    )  # fmt: skip
    _take_artifacts(job, result, tar_of({"out": b"from the node\n"}), root=Root.of(base))
    assert (base / "out").read_text() == "the user's own file\n"
    assert result.ok and result.artifacts_dir is not None
    folder = Path(result.artifacts_dir)
    assert folder.parent == base / ".pyro-artifacts"
    assert (folder / "out").read_text() == "from the node\n"


def _finished(reply: object, tmp_path: Path) -> Any:
    """What the Ray executor makes of a node's ``reply`` (no Ray: a fake handle)."""
    import concurrent.futures
    from types import SimpleNamespace
    from typing import cast

    from pyro.cluster.ray_exec import RayExecutor

    ray = SimpleNamespace(
        remote=lambda **_: lambda function: function,
        exceptions=SimpleNamespace(RayTaskError=RuntimeError),
    )
    executor = RayExecutor(ray, [], {}, None)
    steps = [CopyOutStep(id="s1", source="/work/out", target="out")]
    job = cast(
        Any, SimpleNamespace(name="ci", plan=SimpleNamespace(steps=steps, spec_dir=str(tmp_path)))
    )
    inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
    inner.set_result(reply)
    outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
    executor._finish(job, "ref", inner, outer)
    assert outer.done(), "the instance's result never came: the dispatch would wait forever"
    return outer.exception() or outer.result()


def _node_result(**fields: Any) -> dict[str, Any]:
    from pyro.execute.result import RunResult

    result = RunResult(
        ok=True, name="ci", plan_digest="", environment="e", environment_digest=None,
        backend=None, vm_id=None, exit_code=0, duration_ms=0, steps=[],
    )  # fmt: skip
    return result.model_copy(update=fields).model_dump(mode="json")


@pytest.mark.parametrize(
    "reply",
    [
        {},
        [],
        "not a reply",
        {"result": _node_result(), "node": "n1"},
        {"result": "x", "node": "n1", "artifacts": b""},
    ],
    ids=["empty", "a-list", "a-string", "no-artifacts-key", "result-not-an-object"],
)
def test_a_malformed_node_reply_is_an_error_never_a_hang(tmp_path: Path, reply: object) -> None:
    outcome = _finished(reply, tmp_path)
    assert isinstance(outcome, PyroError)
    assert "could not be taken in" in str(outcome)


def test_a_broken_artifact_tar_fails_its_instance(tmp_path: Path) -> None:
    reply = {"result": _node_result(), "node": "n1", "artifacts": b"not a tar" * 100}
    outcome = _finished(reply, tmp_path)
    assert not outcome.ok
    assert "tar" in str(outcome.error)
    assert list(tmp_path.iterdir()) == []


def test_a_nodes_word_on_where_artifacts_are_is_not_taken(tmp_path: Path) -> None:
    """``artifacts_dir`` is the controller's to say (a confined caller's fresh folder);
    a node naming one (say /etc, for a caller that cleans it up) is not believed."""
    reply = {"result": _node_result(artifacts_dir="/etc"), "node": "n1", "artifacts": b""}
    outcome = _finished(reply, tmp_path)
    assert outcome.ok and outcome.artifacts_dir is None


def test_only_the_scratch_folders_of_gone_workers_are_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from pyro.cluster.worker import SCRATCH_PREFIX, reap_scratch
    from pyro.process.identity import start_ticks

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead_pid = 2**22 + 7  # above any pid_max: never alive
    dead = tmp_path / f"{SCRATCH_PREFIX}{dead_pid}-1.0-abc"
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-{start_ticks(os.getpid())}-def"
    target = tmp_path / "elsewhere"
    for folder in (dead / "spec", live, target):
        folder.mkdir(parents=True)
    link = tmp_path / f"{SCRATCH_PREFIX}{dead_pid}-1.0-link"
    link.symlink_to(target)
    assert reap_scratch() == [dead.name]
    assert not dead.exists() and live.is_dir() and link.is_symlink() and target.is_dir()


def test_a_run_is_interrupted_once_the_process_that_started_its_worker_is_gone(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys
    import time

    marker = tmp_path / "said"
    run = (
        "import sys, time\n"
        "from pyro.cluster.worker import _ends_with_parent\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    with _ends_with_parent(period=0.05):\n"
        "        while time.monotonic() - start < 30:\n"  # a run's loop, as Ray's cancel needs
        "            time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    open(sys.argv[1], 'w').write(f'interrupted after {time.monotonic() - start:.1f}')\n"
    )
    # The middle process plays the raylet: it starts the worker, then dies after 1 s.
    middle = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
        "time.sleep(1.0)\n"
    )
    subprocess.run([sys.executable, "-c", middle, run, str(marker)], check=True, timeout=30)
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    said = marker.read_text()
    assert said.startswith("interrupted after ")
    assert 0.9 <= float(said.split()[-1]) < 10  # not before its parent went
