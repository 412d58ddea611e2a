"""Run ``artifacts`` (copy-out) against a guest agent that lies (issue #17, items 1 and 6).

Same writer as ``task export`` (pyro/machines/copyout.py), with the artifact rules: guest modes are
not kept and no guest symlink is recreated. Older fuzz cases: tests/unit/fuzz/.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from helpers.lying_agent import LyingAgent, endless, raw_entry

from pyro.errors import GuestPathError, LimitError
from pyro.execute import transfer
from pyro.guest.results import GuestStat

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
        == "1 file(s), 3 bytes, 3 skipped (symlinks and special files are not copied)"
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
