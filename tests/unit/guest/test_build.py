"""Building the agent initramfs: deterministic, cached, locked, clear errors."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pyro.errors import BuildError
from pyro.guest import build
from pyro.guest.build import agent_digest, agent_source_digest, build_agent_initrd, pack_initrd

needs_compiler = pytest.mark.skipif(
    not (shutil.which("musl-gcc") or shutil.which("gcc")), reason="no C compiler installed"
)


def parse_newc(data: bytes) -> list[tuple[str, int, int, bytes]]:
    """(name, mode, mtime, content) of every member of a newc archive."""
    members = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, mtime, size, namesize = fields[1], fields[5], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return members
        members.append((name, mode, mtime, data[body : body + size]))
        pos = body + size + (-size % 4)


def test_source_digest_is_stable_and_tracks_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = agent_source_digest()
    assert digest.startswith("sha256:") and digest == agent_source_digest()
    real = build._sources()
    monkeypatch.setattr(build, "_sources", lambda: [*real, ("extra.h", b"/* x */")])
    assert agent_source_digest() != digest


def test_pack_initrd_layout() -> None:
    members = parse_newc(pack_initrd(b"\x7fELF fake"))
    names = {name: (mode, mtime) for name, mode, mtime, _ in members}
    assert set(names) == {".", "dev", "dev/console", "init", "newroot", "proc", "sys"}
    assert names["init"][0] == 0o100755
    assert names["dev/console"][0] == 0o020600
    assert all(mtime == 0 for _, mtime in names.values())
    assert dict((n, c) for n, _, _, c in members)["init"] == b"\x7fELF fake"


@pytest.mark.skipif(not shutil.which("cpio"), reason="cpio not installed")
def test_pack_initrd_is_readable_by_cpio() -> None:
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=pack_initrd(b"x"), capture_output=True, check=True
    ).stdout.split()
    assert sorted(listing) == sorted(
        [b".", b"dev", b"dev/console", b"init", b"newroot", b"proc", b"sys"]
    )


@needs_compiler
def test_build_is_cached_deterministic_and_digested(tmp_path: Path) -> None:
    assert agent_digest(tmp_path / "a") is None
    first = build_agent_initrd(tmp_path / "a")
    second = build_agent_initrd(tmp_path / "b")
    source_hex = agent_source_digest().removeprefix("sha256:")
    assert first == tmp_path / "a" / "agent" / source_hex / "agent.cpio"
    assert first.read_bytes() == second.read_bytes()
    assert (
        agent_digest(tmp_path / "a") == "sha256:" + hashlib.sha256(first.read_bytes()).hexdigest()
    )
    assert build_agent_initrd(tmp_path / "a") == first  # cached: no rebuild
    assert list((tmp_path / "a" / "tmp").iterdir()) == []
    init = dict((n, c) for n, _, _, c in parse_newc(first.read_bytes()))["init"]
    assert init.startswith(b"\x7fELF")


@needs_compiler
def test_concurrent_builds_build_once(tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(build_agent_initrd, [tmp_path] * 3))
    assert len(set(paths)) == 1
    assert [p.name for p in (tmp_path / "agent").iterdir()] == [paths[0].parent.name]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_missing_compiler_is_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(BuildError, match="no C compiler") as info:
        build_agent_initrd(tmp_path)
    assert "musl-tools" in info.value.hint


@needs_compiler
def test_compile_failure_shows_compiler_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "_sources", lambda: [("main.c", b"int main(void) { oops }\n")])
    with pytest.raises(BuildError, match="oops"):
        build_agent_initrd(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert agent_digest(tmp_path) is None
