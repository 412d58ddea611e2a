"""Copy-out against a guest that lies: bad names, symlinks, endless files (a fake agent).

The real-guest versions are in tests/e2e/test_hardening.py; here the guest's answers are
chosen to be as hostile as the protocol allows, which a real agent never sends.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro.errors import GuestPathError, LimitError, PyroError
from pyro.execute import transfer
from pyro.guest.results import GuestStat


def entry(name: str, kind: str = "f", size: int = 3, link: str | None = None) -> GuestStat:
    return GuestStat(name, kind, 0o644, size, 0, 0, 0, link)


class LyingGuest:
    """Answers stat/list/get from a dict: guest dir -> entries; every file holds b"abc"."""

    def __init__(self, tree: dict[str, list[GuestStat]], file_bytes: int = 3) -> None:
        self.tree = tree
        self.file_bytes = file_bytes

    def stat(self, path: str) -> GuestStat:
        return entry(path.rsplit("/", 1)[-1], "d" if path in self.tree else "f")

    def list_dir(self, path: str) -> list[GuestStat]:
        return self.tree.get(path, [])

    def get_file(self, path: str, dst: BinaryIO, *, max_bytes: int | None = None) -> int:
        if max_bytes is not None and self.file_bytes > max_bytes:
            raise LimitError(f"guest file {path} is larger than {max_bytes} bytes")
        dst.write(b"abc"[: self.file_bytes])
        return min(3, self.file_bytes)


@pytest.mark.parametrize("name", ["..", ".", "", "a/../../x", "/etc/passwd", "nul\x00"])
def test_copy_out_refuses_bad_guest_names(name: str, tmp_path: Path) -> None:
    guest = LyingGuest({"/out": [entry(name)]})
    with pytest.raises(GuestPathError, match="bad file name"):
        transfer.copy_out(guest, tmp_path, "/out", "./got/")  # type: ignore[arg-type]
    assert not (tmp_path.parent / "x").exists()


def test_copy_out_skips_guest_symlinks_and_specials(tmp_path: Path) -> None:
    guest = LyingGuest(
        {
            "/out": [
                entry("link", "l", link="/etc/passwd"),
                entry("fifo", "p"),
                entry("dev", "c"),
                entry("ok.txt"),
            ]
        }
    )
    transfer.copy_out(guest, tmp_path, "/out", "./got/")  # type: ignore[arg-type]
    got = tmp_path / "got" / "out"
    assert sorted(p.name for p in got.iterdir()) == ["ok.txt"]


def test_copy_out_does_not_write_through_a_host_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "got").symlink_to(outside)
    guest = LyingGuest({"/out": [entry("x.txt")]})
    with pytest.raises(GuestPathError, match="outside"):
        transfer.copy_out(guest, root, "/out", "./got/")  # type: ignore[arg-type]
    assert list(outside.iterdir()) == []


def test_copy_out_stops_at_the_entry_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_ENTRIES", "5")
    guest = LyingGuest({"/out": [entry(f"f{i}") for i in range(50)]})
    with pytest.raises(LimitError, match="more than 5 entries") as info:
        transfer.copy_out(guest, tmp_path, "/out", "./got/")  # type: ignore[arg-type]
    assert "PYRO_COPY_OUT_MAX_ENTRIES" in info.value.hint
    assert not (tmp_path / "got").exists()  # refused while listing: nothing written


def test_copy_out_of_a_huge_file_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", "2")
    guest = LyingGuest({"/out": [entry("big", size=1)]}, file_bytes=3)  # its size lies
    with pytest.raises(LimitError, match="more than 2 bytes"):
        transfer.copy_out(guest, tmp_path, "/out", "./got/")  # type: ignore[arg-type]
    assert [p.name for p in (tmp_path / "got" / "out").iterdir()] == []


_NAMES = st.one_of(
    st.sampled_from(["..", ".", "", "a/b", "..\x00", "x" * 250, "x" * 300, "ok"]),
    st.text(max_size=20),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(names=st.lists(_NAMES, max_size=6), kinds=st.lists(st.sampled_from("fdlpcs?"), max_size=6))
def test_copy_out_writes_only_under_its_root(
    names: list[str], kinds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    root.mkdir()
    entries = [entry(n, k) for n, k in zip(names, kinds, strict=False)]
    guest = LyingGuest({"/out": entries, **{f"/out/{e.name}": [] for e in entries}})
    with contextlib.suppress(PyroError):
        transfer.copy_out(guest, root, "/out", "./got/")  # type: ignore[arg-type]
    written = [p for p in base.rglob("*") if p != root]
    assert all(root in p.parents for p in written), written
    assert not any(p.is_symlink() for p in written)


@pytest.mark.parametrize("length", [250, 255, 300])
def test_copy_out_of_names_too_long_for_the_host_is_an_error(length: int, tmp_path: Path) -> None:
    guest = LyingGuest({"/out": [entry("x" * length)]})
    try:
        transfer.copy_out(guest, tmp_path, "/out", "./got/")  # type: ignore[arg-type]
    except GuestPathError as exc:
        assert "longer than a host file name" in exc.summary
        assert not (tmp_path / "got").exists()  # refused while listing: nothing written
    else:
        assert (tmp_path / "got" / "out" / ("x" * length)).read_bytes() == b"abc"
        assert [p.name for p in (tmp_path / "got" / "out").iterdir()] == ["x" * length]
