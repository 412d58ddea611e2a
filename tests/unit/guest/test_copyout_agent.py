"""Guest-to-host copies through the REAL C agent (host test mode), from a hostile "guest"
tree built on this host: names that are not UTF-8, links to host folders and to
/dev/urandom, a sparse file with hard links (issue #17, items 1 and 6).

The agent serves the host's own files here, so the tree is built with plain os calls; the
bytes travel through the real protocol, client and decoding.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pyro.errors import GuestPathError, LimitError
from pyro.execute import transfer
from pyro.tasks.files import export_path

if TYPE_CHECKING:
    from conftest import AgentServer

pytestmark = pytest.mark.hostile


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    root = tmp_path / "guest"
    root.mkdir()
    return root


def everything(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_names_that_are_not_utf8_are_refused(
    agent: AgentServer, guest: Path, tmp_path: Path
) -> None:
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    os.symlink(host_dir, os.fsencode(guest) + b"/p3\x80")
    (guest / "p3\N{REPLACEMENT CHARACTER}").mkdir()  # the bytes p3\xef\xbf\xbd
    (guest / "p3\N{REPLACEMENT CHARACTER}" / "authorized_keys").write_text("attacker\n")
    out = tmp_path / "out"

    with pytest.raises(GuestPathError, match="not valid UTF-8"):
        export_path(agent.connect(), str(guest), out)

    assert list(host_dir.iterdir()) == [] and not out.exists()


def test_links_in_the_output_are_never_written_through(
    agent: AgentServer, guest: Path, tmp_path: Path
) -> None:
    host_dir = tmp_path / "some-host-dir"
    host_dir.mkdir()
    (guest / "sub").mkdir()
    (guest / "inner").symlink_to("sub")
    (guest / "ssh").symlink_to(host_dir)
    out = tmp_path / "out"
    client = agent.connect()

    first = export_path(client, str(guest), out)

    assert first.skipped == [f"{guest}/ssh"] and os.readlink(out / "inner") == "sub"
    # The guest swaps its links for folders; an older export left ssh -> host folder.
    (out / "ssh").symlink_to(host_dir)
    for name in ("inner", "ssh"):
        (guest / name).unlink()
        (guest / name).mkdir()
        (guest / name / "planted").write_text("from the guest\n")

    export_path(client, str(guest), out)

    assert list(host_dir.iterdir()) == [] and list((out / "sub").iterdir()) == []
    assert everything(out) == ["inner", "inner/planted", "ssh", "ssh/planted", "sub"]


def test_modes_and_special_files(agent: AgentServer, guest: Path, tmp_path: Path) -> None:
    (guest / "hook").write_text("#!/bin/sh\n")
    (guest / "hook").chmod(0o6777)
    os.mkfifo(guest / "fifo")
    old = os.umask(0o022)
    try:
        result = export_path(agent.connect(), str(guest), tmp_path / "out")
    finally:
        os.umask(old)
    assert result.skipped == [f"{guest}/fifo"]
    assert stat.S_IMODE((tmp_path / "out" / "hook").stat().st_mode) == 0o755


def test_a_top_level_link_to_dev_urandom_is_not_read(
    agent: AgentServer, guest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the fix this read up to this constant (16 GiB); kept small for that run.
    monkeypatch.setattr(transfer, "MAX_COPY_OUT_BYTES", 64 << 20, raising=False)
    (guest / "rand").symlink_to("/dev/urandom")
    root = tmp_path / "project"
    root.mkdir()
    client = agent.connect()

    with pytest.raises(GuestPathError, match="is a symlink in the guest"):
        transfer.copy_out(client, root, str(guest / "rand"), "./r")
    stats = transfer.copy_out(client, root, str(guest), "./got/")

    assert stats.skipped == [f"{guest}/rand"] and everything(root) == ["got", "got/guest"]


def test_a_sparse_file_and_hard_links_count_in_full(
    agent: AgentServer, guest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "32M")
    with (guest / "big").open("wb") as f:
        f.truncate(16 << 20)  # a few KiB on disk
    for name in ("h1", "h2", "h3"):
        os.link(guest / "big", guest / name)
    root = tmp_path / "project"
    root.mkdir()
    client = agent.connect()

    with pytest.raises(LimitError, match="more than 32 MiB") as info:
        export_path(client, str(guest), tmp_path / "out")
    with pytest.raises(LimitError, match="more than 32 MiB"):
        transfer.copy_out(client, root, str(guest), "./got/")

    assert "PYRO_COPY_OUT_MAX_BYTES" in info.value.hint and "hard link" in info.value.hint
    assert not (tmp_path / "out").exists() and everything(root) == []
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "64M")  # exactly enough: it is allowed
    assert export_path(client, str(guest), tmp_path / "out").bytes == 64 << 20


def test_the_guests_git_metadata_is_not_written(
    agent: AgentServer, guest: Path, tmp_path: Path
) -> None:
    # Red-team finding 1: an executable .git/hooks/pre-commit and core.fsmonitor in
    # .git/config ran guest code at the user's next git command.
    (guest / ".git" / "hooks").mkdir(parents=True)
    (guest / ".git" / "config").write_text('[core]\n\tfsmonitor = "touch pwned; false"\n')
    (guest / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\ntouch pwned\n")
    (guest / ".git" / "hooks" / "pre-commit").chmod(0o755)
    for folder in ("objects", "refs"):
        (guest / "vendor" / folder).mkdir(parents=True)
    (guest / "vendor" / "HEAD").write_text("ref: refs/heads/main\n")
    (guest / "run.sh").write_text("#!/bin/sh\n")
    (guest / "run.sh").chmod(0o755)
    out = tmp_path / "out"
    root = tmp_path / "project"
    root.mkdir()
    client = agent.connect()

    result = export_path(client, str(guest), out)
    stats = transfer.copy_out(client, root, str(guest), "./got/")

    assert sorted(result.skipped) == [f"{guest}/.git", f"{guest}/vendor"]
    assert everything(out) == ["run.sh"] and os.access(out / "run.sh", os.X_OK)
    assert sorted(stats.skipped) == sorted(result.skipped)
    assert everything(root) == ["got", "got/guest", "got/guest/run.sh"]
    with pytest.raises(GuestPathError, match=r"in a \.git folder"):
        transfer.copy_out(client, root, str(guest / ".git" / "config"), ".git/config")
    assert everything(root) == ["got", "got/guest", "got/guest/run.sh"]


def test_a_chain_deeper_than_the_cap_is_refused_while_listing(
    agent: AgentServer, guest: Path, tmp_path: Path
) -> None:
    # Red-team finding 3: a deep chain grew host memory ~ depth^2 while listing and held
    # one open fd per level while writing.
    deep = guest
    for _ in range(129):
        deep = deep / "a"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    out = tmp_path / "out"

    with pytest.raises(LimitError, match="more than 128 levels deep"):
        export_path(agent.connect(), str(guest), out)

    assert not out.exists()
