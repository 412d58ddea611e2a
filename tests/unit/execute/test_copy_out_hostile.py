"""Run ``artifacts`` (copy-out) against a guest agent that lies (issue #17, items 1 and 6).

Same writer as ``task export`` (pyro/machines/copyout.py), with the artifact rules: guest modes are
not kept and no guest symlink is recreated. Older fuzz cases: tests/unit/fuzz/.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers.lying_agent import LyingAgent, endless, raw_entry

from pyro.errors import GuestPathError, LimitError
from pyro.execute import transfer
from pyro.guest.results import GuestStat

if TYPE_CHECKING:
    from pyro.plan.model import Plan

pytestmark = pytest.mark.hostile


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture(autouse=True)
def _old_cap_kept_small(monkeypatch: pytest.MonkeyPatch) -> None:
    # The code before the fix read one file up to this constant (16 GiB); kept small so the
    # "fails before" run of these tests ends. The fixed code no longer has it.
    monkeypatch.setattr(transfer, "MAX_COPY_OUT_BYTES", 64 << 20, raising=False)


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        (raw_entry(b"rand", "l", link=b"/dev/urandom"), "symlink"),
        (raw_entry(b"rand", "c"), "char"),
        (raw_entry(b"rand", "p"), "fifo"),
    ],
)
def test_a_top_level_symlink_or_device_artifact_is_refused_unread(
    entry: GuestStat, kind: str, tmp_path: Path
) -> None:
    agent = LyingAgent()
    agent.tops["/out/rand"] = entry
    agent.contents["/out/rand"] = endless()

    with pytest.raises(GuestPathError, match=f"is a {kind} in the guest") as info:
        transfer.copy_out(agent, tmp_path, "/out/rand", "./r")  # type: ignore[arg-type]

    assert "symlinks are not followed" in info.value.hint
    assert agent.reads == [] and everything(tmp_path) == []


def test_the_byte_cap_holds_for_the_whole_copy_not_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "4M")
    agent = LyingAgent()
    agent.folder("/out", *(raw_entry(f"f{i}".encode(), size=0) for i in range(10)))
    for i in range(10):
        agent.contents[f"/out/f{i}"] = endless(stop=1 << 20)

    with pytest.raises(LimitError, match="more than 4 MiB") as info:
        transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert "PYRO_COPY_OUT_MAX_BYTES" in info.value.hint
    assert everything(tmp_path / "got" / "out") == ["f0", "f1", "f2", "f3"]  # no partial


def test_sparse_files_and_hard_links_are_refused_from_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "1G")
    agent = LyingAgent()
    agent.folder("/out", *(raw_entry(n, size=512 << 20) for n in (b"big", b"h1", b"h2")))
    for n in ("big", "h1", "h2"):
        agent.contents[f"/out/{n}"] = endless(stop=1 << 20)

    with pytest.raises(LimitError, match="more than 1 GiB"):
        transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert agent.reads == [] and everything(tmp_path) == []


def test_folders_count_toward_the_entry_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_ENTRIES", "50")
    agent = LyingAgent()
    agent.folder("/out", *(raw_entry(f"d{i:03}".encode(), "d") for i in range(100)))
    for i in range(100):
        agent.folder(f"/out/d{i:03}")

    with pytest.raises(LimitError, match="more than 50 entries"):
        transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert everything(tmp_path) == []


def test_two_names_that_decode_alike_are_refused_not_merged(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder("/out", raw_entry(b"p3\x80"), raw_entry(b"p3\xef\xbf\xbd"))

    with pytest.raises(GuestPathError, match="not valid UTF-8"):
        transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert everything(tmp_path) == []


def test_a_link_in_the_artifact_folder_is_replaced_not_followed(tmp_path: Path) -> None:
    # The link stays inside the spec's folder, so resolving the target path accepts it;
    # what the guest puts below the target is still never written through it.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "got" / "out").mkdir(parents=True)
    (tmp_path / "got" / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "got" / "out" / "file").symlink_to(tmp_path / "elsewhere" / "file")
    agent = LyingAgent()
    agent.folder("/out", raw_entry(b"sub", "d"), raw_entry(b"file"))
    agent.folder("/out/sub", raw_entry(b"planted"))

    stats = transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert stats.files == 2
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert not (tmp_path / "got" / "out" / "sub").is_symlink()
    assert (tmp_path / "got" / "out" / "sub" / "planted").read_bytes() == b"abc"


def test_guest_symlinks_and_specials_are_skipped_and_counted(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder(
        "/out",
        raw_entry(b"inside", "l", link=b"ok"),
        raw_entry(b"passwd", "l", link=b"/etc/passwd"),
        raw_entry(b"fifo", "p"),
        raw_entry(b"ok"),
    )

    stats = transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert sorted(stats.skipped) == ["/out/fifo", "/out/inside", "/out/passwd"]
    assert (
        stats.summary()
        == "1 file(s), 3 bytes, 3 skipped (symlinks, special files and git metadata are not copied)"
    )
    assert everything(tmp_path / "got") == ["out", "out/ok"]


def test_guest_modes_are_not_kept(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder("/out", raw_entry(b"hook", mode=0o6777))
    old = os.umask(0o022)
    try:
        transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "got" / "out" / "hook").stat().st_mode) == 0o644


def test_a_file_artifact_replaces_a_link_at_its_target(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("precious\n")
    (tmp_path / "result.txt").symlink_to(tmp_path / "config")
    agent = LyingAgent()
    agent.contents["/out/result.txt"] = b"from the guest\n"

    transfer.copy_out(agent, tmp_path, "/out/result.txt", "./result.txt")  # type: ignore[arg-type]

    assert (tmp_path / "config").read_text() == "precious\n"
    assert not (tmp_path / "result.txt").is_symlink()
    assert (tmp_path / "result.txt").read_text() == "from the guest\n"


# -- git metadata (red-team finding 1) ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("/out/config", ".git/config"),  # plants core.fsmonitor: git status runs it
        ("/out/config", "sub/.GIT/config"),
        ("/out/hooks", ".git/hooks"),
        ("/w/.git", "./"),  # lands in ./.git
        ("/w/.git", "keep/"),
    ],
)
def test_an_artifact_never_lands_in_a_git_folder(source: str, target: str, tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    agent = LyingAgent()
    agent.contents["/out/config"] = b'[core]\n\tfsmonitor = "touch /tmp/pwned; false"\n'
    agent.folder("/out/hooks", raw_entry(b"pre-commit", mode=0o755))
    agent.folder("/w/.git", raw_entry(b"config"))

    with pytest.raises(GuestPathError, match=r"in a \.git folder") as info:
        transfer.copy_out(agent, tmp_path, source, target)  # type: ignore[arg-type]

    assert info.value.hint and agent.reads == []
    assert everything(tmp_path) == [".git", ".git/config"]
    assert (tmp_path / ".git" / "config").read_text() == "[core]\n"


def test_git_metadata_inside_an_artifact_folder_is_skipped(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder("/out", raw_entry(b".git", "d"), raw_entry(b"bare", "d"), raw_entry(b"ok"))
    agent.folder("/out/.git", raw_entry(b"config"))
    agent.folder(
        "/out/bare", raw_entry(b"HEAD"), raw_entry(b"objects", "d"), raw_entry(b"refs", "d")
    )

    stats = transfer.copy_out(agent, tmp_path, "/out", "./got/")  # type: ignore[arg-type]

    assert sorted(stats.skipped) == ["/out/.git", "/out/bare"]
    assert everything(tmp_path) == ["got", "got/out", "got/out/ok"]
    assert agent.reads == ["/out/ok"]


# -- one budget per run (red-team finding 4) ------------------------------------------------


def artifacts_plan(count: int, source: str = "/big", spec_dir: str = "/nonexistent") -> Plan:
    from pyro.plan.model import seal

    return seal(
        metadata={"name": "amp"},
        spec_dir=spec_dir,
        applyable=True,
        inventory={"arch": "x86_64", "kvm": "none", "backend": "qemu-tcg", "backend_reason": ""},
        environment={
            "ref": "debian:12",
            "name": "debian:12",
            "version": "1",
            "digest": None,
            "origin": "installed",
        },
        resources={"vcpus": 1, "memory_mib": 256},
        timeout_seconds=600,
        steps=[
            {
                "id": "boot",
                "action": "boot",
                "backend": "qemu-tcg",
                "vcpus": 1,
                "memory_mib": 256,
                "environment_digest": None,
                "agent_digest": None,
                "network": {"policy": "off"},
            },
            *(
                {
                    "id": f"copy-out-{i}",
                    "action": "copy-out",
                    "source": source,
                    "target": f"copy{i}",
                }
                for i in range(count)
            ),
        ],
    )


def apply_with(agent: LyingAgent, plan: Plan, base: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Carry ``plan`` out in ``base/project`` with ``agent`` as the booted guest (the VM
    itself is not under test)."""
    from pyro.execute import apply as runner
    from pyro.machines.registry import VMRegistry

    (base / "project").mkdir()
    monkeypatch.setattr(runner, "_boot", lambda run, step: setattr(run, "client", agent))
    monkeypatch.setattr(runner, "check_pins", lambda plan: None)  # no install, agent or source
    return runner.apply(plan, runner.ApplyOptions(registry=VMRegistry(base / "state")))


def test_the_byte_cap_holds_for_all_the_artifacts_of_a_run_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spec names one guest sparse file (4 KiB of guest disk) 20 times: the old code gave
    # each artifact a fresh cap, so one run wrote 20 caps on the host.
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "1M")
    agent = LyingAgent()
    agent.contents["/big"] = b"\0" * (1 << 20)  # exactly the cap

    result = apply_with(
        agent, artifacts_plan(20, spec_dir=str(tmp_path / "project")), tmp_path, monkeypatch
    )

    copies = [s for s in result.steps if s.action == "copy-out"]
    assert [s.status for s in copies] == ["ok"] + ["error"] * 19
    assert "for all artifacts of this run together" in (copies[1].message or "")
    assert not result.ok and result.failed_step == "copy-out-1"
    assert everything(tmp_path / "project") == ["copy0"]
    assert (tmp_path / "project" / "copy0").stat().st_size == 1 << 20


def test_the_entry_cap_holds_for_all_the_artifacts_of_a_run_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_ENTRIES", "5")
    agent = LyingAgent()
    agent.folder("/d", raw_entry(b"a"), raw_entry(b"b"))  # 3 entries with the folder

    result = apply_with(
        agent, artifacts_plan(3, "/d", spec_dir=str(tmp_path / "project")), tmp_path, monkeypatch
    )

    copies = [s for s in result.steps if s.action == "copy-out"]
    assert [s.status for s in copies] == ["ok", "error", "error"]
    assert "more than 5 entries" in (copies[1].message or "")
    assert everything(tmp_path / "project") == ["copy0", "copy0/a", "copy0/b"]
