"""`pyro task export` against a guest agent that lies (issue #17, items 1 and 6).

The agent's answers are scripted byte for byte (tests/helpers/lying_agent.py); the host
side is the real export. Real agents: tests/unit/guest/test_copyout_agent.py (the C agent
on this host) and tests/e2e/test_hostile_copyout.py (a booted guest).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.lying_agent import LyingAgent, endless, raw_entry
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyro.errors import GuestError, GuestPathError, LimitError, UsageError
from pyro.guest.results import GuestStat
from pyro.tasks.files import export_path, list_entries

pytestmark = pytest.mark.hostile


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_two_names_that_decode_alike_are_refused_not_merged(tmp_path: Path) -> None:
    # b"p3\x80" is not UTF-8; decoded with errors="replace" it became "p3\ufffd", the same
    # host name as b"p3\xef\xbf\xbd": the first was made a link to a host folder, the second's
    # files were written through it.
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    out = tmp_path / "out"
    agent = LyingAgent()
    listing = agent.folder(
        "/w",
        raw_entry(b"p3\x80", "l", link=os.fsencode(host_dir)),
        raw_entry(b"p3\xef\xbf\xbd", "d"),
    )
    agent.folder(f"/w/{listing[1].name}", raw_entry(b"authorized_keys"))

    with pytest.raises(GuestPathError, match="not valid UTF-8") as info:
        export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert r"b'p3\x80'" in info.value.summary and info.value.hint
    assert list(host_dir.iterdir()) == []
    assert not out.exists()  # refused while listing: nothing written


@pytest.mark.parametrize(
    "name", [b"../../x", b"..", b".", b"", b"a/b", b"/etc/x", b"nul\x00", b"x" * 256]
)
def test_names_no_file_can_have_are_refused_before_anything_is_written(
    name: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "out"
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"fine"), raw_entry(name))

    with pytest.raises(GuestPathError) as info:
        export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert "name" in info.value.summary
    assert list(tmp_path.iterdir()) == []
    assert agent.reads == []


def test_a_name_listed_twice_is_refused(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"x", "l", link=b"y"), raw_entry(b"x", "d"))
    agent.folder("/w/x", raw_entry(b"f"))
    with pytest.raises(GuestPathError, match="twice"):
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_a_link_left_in_the_output_is_replaced_not_followed(tmp_path: Path) -> None:
    # What an earlier export (by an older pyro) or anyone else left in the output folder.
    host_dir = tmp_path / "some-host-dir"
    host_dir.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "ssh").symlink_to(host_dir)
    (out / "key").symlink_to(host_dir / "key")
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"ssh", "d"), raw_entry(b"key"))
    agent.folder("/w/ssh", raw_entry(b"authorized_keys"))
    agent.contents["/w/ssh/authorized_keys"] = b"attacker key\n"

    export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert list(host_dir.iterdir()) == []
    assert not (out / "ssh").is_symlink() and not (out / "key").is_symlink()
    assert (out / "ssh" / "authorized_keys").read_bytes() == b"attacker key\n"


def test_reexport_after_the_guest_swaps_links_for_folders(tmp_path: Path) -> None:
    host_dir = tmp_path / "some-host-dir"
    host_dir.mkdir()
    out = tmp_path / "out"
    agent = LyingAgent()
    agent.folder(
        "/w",
        raw_entry(b"ssh", "l", link=os.fsencode(host_dir)),
        raw_entry(b"inner", "l", link=b"sub"),
        raw_entry(b"sub", "d"),
    )
    agent.folder("/w/sub")

    first = export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert first.skipped == ["/w/ssh"]  # an absolute target: not recreated, reported
    assert first.symlinks == 1 and os.readlink(out / "inner") == "sub"
    assert not (out / "ssh").is_symlink()

    agent.folder("/w", raw_entry(b"ssh", "d"), raw_entry(b"inner", "d"), raw_entry(b"sub", "d"))
    agent.folder("/w/ssh", raw_entry(b"authorized_keys"))
    agent.folder("/w/inner", raw_entry(b"planted"))

    second = export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert second.skipped == []
    assert list(host_dir.iterdir()) == []
    assert list((out / "sub").iterdir()) == []  # not written through the old inner -> sub
    assert everything(out) == ["inner", "inner/planted", "ssh", "ssh/authorized_keys", "sub"]
    assert not any(p.is_symlink() for p in out.rglob("*"))


@pytest.mark.parametrize(
    ("folder", "target", "kept"),
    [
        ("", b"sub/file", True),
        ("", b"./sub//file", True),
        ("", b".", True),
        ("", b"../x", False),
        ("", b"/etc/passwd", False),
        ("", b"", False),
        ("", b"sub/../..", False),
        ("", b"sub/back/..", False),  # back may be a link: '..' after a name is refused
        ("", b"p3\x80", False),  # not UTF-8
        ("sub", b"..", True),
        ("sub", b"../sub/file", True),
        ("sub", b"../..", False),
        ("sub", b"../../out-sibling", False),
    ],
)
def test_links_are_recreated_only_when_they_stay_inside(
    folder: str, target: bytes, kept: bool, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"sub", "d"))
    agent.folder("/w/sub", raw_entry(b"file"))
    where = f"/w/{folder}".rstrip("/")
    agent.listings[where].append(raw_entry(b"link", "l", link=target))

    result = export_path(agent, "/w", out)  # type: ignore[arg-type]

    link = out / folder / "link"
    assert link.is_symlink() is kept
    assert result.skipped == ([] if kept else [f"{where}/link"])
    if kept:
        assert os.fsencode(os.readlink(link)) == target


_PARTS = st.sampled_from(["..", ".", "", "a", "b", "l1", "l2", "l3"])


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    targets=st.lists(st.lists(_PARTS, max_size=5).map("/".join), min_size=3, max_size=3),
    places=st.lists(st.sampled_from(["", "a", "a/b"]), min_size=3, max_size=3),
)
# a/l1 -> .. is the top; l2 -> a/l1/.. is "." read lexically, but the top's parent for the
# kernel, which follows a/l1 before it applies "..".
@example(targets=["..", "a/l1/..", "l2/x"], places=["a", "", "a/b"])
def test_no_chain_of_recreated_links_leads_outside(
    targets: list[str], places: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("chain") / "out"
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"a", "d"))
    agent.folder("/w/a", raw_entry(b"b", "d"))
    agent.folder("/w/a/b")
    for i, (target, place) in enumerate(zip(targets, places, strict=True), 1):
        agent.listings[f"/w/{place}".rstrip("/")].append(
            raw_entry(f"l{i}".encode(), "l", link=target.encode())
        )

    export_path(agent, "/w", out)  # type: ignore[arg-type]

    top = out.resolve()
    for path in out.rglob("*"):
        try:
            real = path.resolve(strict=True)  # as the kernel resolves it
        except (FileNotFoundError, RuntimeError, OSError):
            continue  # a loop or a dangling link reaches nothing
        assert real == top or top in real.parents, (path, os.readlink(path), real)


def test_special_bits_are_dropped_and_the_umask_applies(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder(
        "/w",
        raw_entry(b"hook", mode=0o6777),
        raw_entry(b"plain", mode=0o644),
        raw_entry(b"locked", mode=0o000),
        raw_entry(b"dir", "d", mode=0o7777),
    )
    agent.folder("/w/dir")
    old = os.umask(0o027)
    try:
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]
    finally:
        os.umask(old)

    def mode(name: str) -> int:
        return stat.S_IMODE((tmp_path / "out" / name).stat().st_mode)

    assert (mode("hook"), mode("plain"), mode("locked"), mode("dir")) == (
        0o750,
        0o640,
        0o600,
        0o750,
    )


def test_special_files_are_skipped_reported_and_never_read(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder(
        "/w",
        raw_entry(b"fifo", "p"),
        raw_entry(b"sock", "s"),
        raw_entry(b"tty", "c"),
        raw_entry(b"disk", "b"),
        raw_entry(b"odd", "?"),
        raw_entry(b"ok"),
    )

    result = export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]

    assert sorted(result.skipped) == ["/w/disk", "/w/fifo", "/w/odd", "/w/sock", "/w/tty"]
    assert agent.reads == ["/w/ok"] and everything(tmp_path / "out") == ["ok"]


def test_a_top_level_symlink_or_special_file_is_refused_unread(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.tops["/w/rand"] = raw_entry(b"rand", "l", link=b"/dev/urandom")
    agent.tops["/w/tty"] = raw_entry(b"tty", "c")
    for path in ("/w/rand", "/w/tty"):
        with pytest.raises(UsageError, match="not a file or folder"):
            export_path(agent, path, tmp_path / "out")  # type: ignore[arg-type]
    assert agent.reads == [] and not (tmp_path / "out").exists()


def test_an_endless_file_stops_at_the_byte_cap_and_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "1M")
    out = tmp_path / "out"
    agent = LyingAgent()  # ignores max_bytes: the host must stop it itself
    agent.folder("/w", raw_entry(b"a", size=10), raw_entry(b"z", size=1))
    agent.contents["/w/a"] = b"0123456789"
    agent.contents["/w/z"] = endless()

    with pytest.raises(LimitError, match="more than 1 MiB") as info:
        export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert "PYRO_COPY_OUT_MAX_BYTES" in info.value.hint
    assert "'/w/z'" in info.value.summary
    assert "1 file(s) and 0 symlink(s) written before it stay" in info.value.summary
    assert everything(out) == ["a"]  # no partial file


def test_a_top_level_endless_file_stops_at_the_byte_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "512K")
    agent = LyingAgent()
    agent.tops["/w/z"] = raw_entry(b"z", size=1)
    agent.contents["/w/z"] = endless()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(LimitError, match="more than 512 KiB"):
        export_path(agent, "/w/z", out)  # type: ignore[arg-type]
    assert everything(out) == []


def test_folders_count_toward_the_entry_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_ENTRIES", "50")
    agent = LyingAgent()
    agent.folder("/w", *(raw_entry(f"d{i:03}".encode(), "d") for i in range(100)))
    for i in range(100):
        agent.folder(f"/w/d{i:03}")

    with pytest.raises(LimitError, match="more than 50 entries") as info:
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]

    assert "PYRO_COPY_OUT_MAX_ENTRIES" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_sparse_files_and_hard_links_count_in_full_before_anything_is_written(
    tmp_path: Path,
) -> None:
    # A 1 GiB sparse file and four hard links to it: 4 KiB of guest disk, 5 GiB on the
    # host. The listing's sizes pass the default 4 GiB cap before anything is written.
    agent = LyingAgent()
    names = [b"big", b"h1", b"h2", b"h3", b"h4"]
    agent.folder("/w", *(raw_entry(n, size=1 << 30) for n in names))
    for n in names:
        agent.contents[f"/w/{n.decode()}"] = endless(stop=1 << 20)

    with pytest.raises(LimitError, match="more than 4 GiB") as info:
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]

    assert "hard link" in info.value.hint
    assert agent.reads == [] and not (tmp_path / "out").exists()


def test_sizes_that_lie_are_caught_on_the_bytes_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "4M")
    agent = LyingAgent()
    agent.folder("/w", *(raw_entry(f"h{i}".encode(), size=0) for i in range(8)))
    for i in range(8):
        agent.contents[f"/w/h{i}"] = endless(stop=1 << 20)

    with pytest.raises(LimitError, match="more than 4 MiB") as info:
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]

    assert "4 file(s)" in info.value.summary
    assert everything(tmp_path / "out") == ["h0", "h1", "h2", "h3"]


def test_a_guest_error_mid_file_leaves_no_partial_and_says_what_stays(tmp_path: Path) -> None:
    def breaks() -> Iterator[bytes]:
        yield b"x" * 100
        raise GuestError("guest agent connection closed (test)")

    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"a"), raw_entry(b"b"))
    agent.contents["/w/b"] = breaks

    with pytest.raises(GuestError, match="connection closed") as info:
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]

    assert "1 file(s)" in info.value.summary and "no partial file" in info.value.summary
    assert everything(tmp_path / "out") == ["a"]


def test_a_hard_link_in_the_output_does_not_carry_the_write(tmp_path: Path) -> None:
    precious = tmp_path / "bashrc"
    precious.write_text("original\n")
    out = tmp_path / "out"
    out.mkdir()
    os.link(precious, out / "f")
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"f"))
    agent.contents["/w/f"] = b"guest\n"

    export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert (out / "f").read_text() == "guest\n" and precious.read_text() == "original\n"


def test_a_file_where_the_guest_has_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "d").write_text("mine\n")
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"d", "d"))
    agent.folder("/w/d", raw_entry(b"f"))

    with pytest.raises(UsageError, match="a file is there and the guest has a folder"):
        export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert (out / "d").read_text() == "mine\n"


@pytest.mark.parametrize("value", ["lots", "-1", "1.5G"])
def test_a_bad_cap_setting_is_a_usage_error(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", value)
    agent = LyingAgent()
    agent.folder("/w")
    with pytest.raises(UsageError, match="PYRO_COPY_OUT_MAX_BYTES"):
        export_path(agent, "/w", tmp_path / "out")  # type: ignore[arg-type]


def test_a_listing_shows_names_that_are_not_utf8_as_text() -> None:
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"p3\x80", "l", link=b"t\xff"), raw_entry(b"p3\xef\xbf\xbd"))
    entries = list_entries(agent, "/w")  # type: ignore[arg-type]
    shown = [json.loads(e.model_dump_json()) for e in entries]  # JSON-safe
    assert [(e["name"], e["link_target"]) for e in shown] == [
        ("p3\N{REPLACEMENT CHARACTER}", "t\N{REPLACEMENT CHARACTER}"),
        ("p3\N{REPLACEMENT CHARACTER}", None),
    ]


# -- git metadata (red-team finding 1) ------------------------------------------------------

HOOK = b"#!/bin/sh\necho hook > MARKER\n"
FSMONITOR = b'[core]\n\tfsmonitor = "echo fsmonitor > MARKER; false"\n'


def git_repo(path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README").write_text("mine\n")
    return path


def run_git(repo: Path) -> None:
    """What the user does next: status, add, commit (hooks and fsmonitor run here)."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@x",
        "GIT_COMMITTER_NAME": "u",
        "GIT_COMMITTER_EMAIL": "u@x",
    }
    for argv in (["status"], ["add", "README"], ["commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, env=env, check=False)


def hostile_git(agent: LyingAgent, folder: str, name: bytes, marker: Path) -> None:
    """``folder/name`` holds an executable pre-commit hook and a config with fsmonitor."""
    hook = HOOK.replace(b"MARKER", os.fsencode(marker))
    config = FSMONITOR.replace(b"MARKER", os.fsencode(marker))
    git = f"{folder}/{name.decode()}"
    agent.folder(git, raw_entry(b"config", size=len(config)), raw_entry(b"hooks", "d", mode=0o755))
    agent.folder(f"{git}/hooks", raw_entry(b"pre-commit", mode=0o755, size=len(hook)))
    agent.contents[f"{git}/config"] = config
    agent.contents[f"{git}/hooks/pre-commit"] = hook


@pytest.mark.parametrize(
    "name", [b".git", b".GIT", b".Git.", b".git ", b".g\xe2\x80\x8cit", b"git~1", b"GIT~1"]
)
def test_the_guests_git_metadata_is_skipped_not_written(name: bytes, tmp_path: Path) -> None:
    # Seed from the project, let the agent work, export /workspace back over the project:
    # the guest's .git/hooks/pre-commit (0755) and core.fsmonitor ran at the next git
    # command. Other spellings are .git to a case-insensitive, HFS+ or NTFS folder.
    repo = git_repo(tmp_path / "project")
    config_before = (repo / ".git" / "config").read_bytes()
    marker = tmp_path / "ran"
    agent = LyingAgent()
    agent.folder("/workspace", raw_entry(name, "d"), raw_entry(b"main.py", mode=0o755))
    hostile_git(agent, "/workspace", name, marker)

    result = export_path(agent, "/workspace", repo)  # type: ignore[arg-type]
    run_git(repo)

    assert result.skipped == [f"/workspace/{name.decode()}"]
    assert not marker.exists()
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert sorted(p.name for p in repo.iterdir()) == [".git", "README", "main.py"]
    assert agent.reads == ["/workspace/main.py"]  # the skipped files were never read
    # The exec bit stays on ordinary files: an exported project's scripts still run.
    assert stat.S_IMODE((repo / "main.py").stat().st_mode) & 0o100


def test_a_folder_laid_out_as_git_is_skipped_and_a_git_folder_export_refused(
    tmp_path: Path,
) -> None:
    # Not named .git, but git uses it as a git folder when the user runs git inside it
    # (a bare repository): its config (core.pager, core.fsmonitor...) is the guest's.
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b"vendor", "d"), raw_entry(b"ok"))
    agent.folder(
        "/w/vendor",
        raw_entry(b"HEAD"),
        raw_entry(b"config"),
        raw_entry(b"objects", "d"),
        raw_entry(b"refs", "d"),
    )
    out = tmp_path / "out"

    result = export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert result.skipped == ["/w/vendor"] and everything(out) == ["ok"]
    with pytest.raises(GuestPathError, match="laid out as a git folder") as info:
        export_path(agent, "/w/vendor", tmp_path / "bare")  # type: ignore[arg-type]
    assert "--include-git" in info.value.hint and not (tmp_path / "bare").exists()


def test_an_output_in_a_git_folder_is_refused(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "project")
    agent = LyingAgent()
    agent.folder("/w/hooks", raw_entry(b"pre-commit", mode=0o755))
    agent.contents["/w/hooks/pre-commit"] = b"#!/bin/sh\n"
    agent.tops["/w/config"] = raw_entry(b"config")
    for path, output in [("/w/hooks", repo / ".git" / "hooks"), ("/w/config", repo / ".GIT")]:
        with pytest.raises(UsageError, match=r"in a \.git folder") as info:
            export_path(agent, path, output)  # type: ignore[arg-type]
        assert "--include-git" in info.value.hint
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert agent.reads == []


def test_include_git_copies_git_metadata_when_asked(tmp_path: Path) -> None:
    agent = LyingAgent()
    agent.folder("/w", raw_entry(b".git", "d"))
    hostile_git(agent, "/w", b".git", tmp_path / "ran")

    result = export_path(agent, "/w", tmp_path / "out", include_git=True)  # type: ignore[arg-type]

    assert result.skipped == [] and result.files == 2
    hook = tmp_path / "out" / ".git" / "hooks" / "pre-commit"
    assert stat.S_IMODE(hook.stat().st_mode) & 0o100


# -- deep chains from a lying agent (red-team finding 3) ------------------------------------


class DeepAgent(LyingAgent):
    """Lists one subfolder per level, ``levels`` deep, each level one tiny LIST answer."""

    def __init__(self, levels: int, name: bytes = b"a") -> None:
        super().__init__()
        self.levels = levels
        self.name = name
        self.lists = 0

    def stat(self, path: str) -> GuestStat:
        return raw_entry(b"w", "d")

    def list_dir(self, path: str) -> list[GuestStat]:
        self.lists += 1
        if self.lists > self.levels:
            return [raw_entry(b"f", size=1)]
        return [raw_entry(self.name, "d")]


def test_a_deep_chain_of_folders_stops_at_the_depth_cap_before_anything_is_written(
    tmp_path: Path,
) -> None:
    # The old code kept every folder's full path while listing (host memory ~ depth^2:
    # a 2 GiB host died with MemoryError) and held one open fd per level while writing
    # (EMFILE for the whole process past RLIMIT_NOFILE).
    agent = DeepAgent(levels=2000)
    out = tmp_path / "out"

    with pytest.raises(LimitError, match="more than 128 levels deep") as info:
        export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert "PYRO_COPY_OUT_MAX_DEPTH" in info.value.hint
    assert agent.lists == 129 and agent.reads == [] and not out.exists()


def test_the_depth_cap_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_DEPTH", "3")
    with pytest.raises(LimitError, match="more than 3 levels deep"):
        export_path(DeepAgent(levels=4), "/w", tmp_path / "deep")  # type: ignore[arg-type]
    result = export_path(DeepAgent(levels=3), "/w", tmp_path / "ok")  # type: ignore[arg-type]
    assert result.files == 1 and (tmp_path / "ok" / "a" / "a" / "a" / "f").exists()
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_DEPTH", "3K")
    with pytest.raises(UsageError, match="PYRO_COPY_OUT_MAX_DEPTH"):
        export_path(DeepAgent(levels=1), "/w", tmp_path / "bad")  # type: ignore[arg-type]


def test_a_guest_path_longer_than_path_max_is_refused_while_listing(tmp_path: Path) -> None:
    # 255-byte names: level 16 passes 4095 bytes, a path no guest can open. Past ~4,100
    # levels the old code's request frame passed 1 MiB: a bare ValueError (a crash).
    agent = DeepAgent(levels=40, name=b"n" * 255)
    out = tmp_path / "out"

    with pytest.raises(GuestPathError, match="bytes long; a guest path is at most 4095") as info:
        export_path(agent, "/w", out)  # type: ignore[arg-type]

    assert "PATH_MAX" in info.value.summary and info.value.hint
    assert agent.lists == 16 and not out.exists()
