"""The guest-to-host tree writer's own rules (pyro/machines/copyout.py); the attacks through
``task export`` and run artifacts are in tests/unit/tasks/ and tests/unit/execute/."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.lying_agent import LyingAgent, raw_entry

from pyro.errors import GuestPathError, UsageError
from pyro.machines.copyout import CopyLimits, CopyRules, copy_tree, link_stays_inside

pytestmark = pytest.mark.hostile


@pytest.mark.parametrize(
    ("target", "depth", "inside"),
    [
        ("a", 0, True),
        ("./a/./b/", 0, True),
        ("..", 1, True),
        ("../..", 1, False),
        ("../../a", 2, True),
        ("a/..", 3, False),
        ("a/../b", 3, False),
        ("/a", 5, False),
        ("", 0, False),
        ("a\0b", 0, False),
        ("\udc80", 0, False),
    ],
)
def test_link_stays_inside(target: str, depth: int, inside: bool) -> None:
    assert link_stays_inside(target, depth) is inside


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", 4 << 30), ("123", 123), ("2k", 2048), ("3 MiB", 3 << 20), ("1G", 1 << 30), ("5b", 5)],
)
def test_byte_cap_from_the_environment(
    value: str, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_BYTES", value)
    monkeypatch.setenv("PYRO_COPY_OUT_MAX_ENTRIES", "7")
    assert CopyLimits.from_env() == CopyLimits(max_bytes=expected, max_entries=7)
    assert CopyLimits.from_env(max_bytes=1, max_entries=2) == CopyLimits(1, 2)


def test_a_destination_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    agent = LyingAgent()
    agent.folder("/g", raw_entry(b"f"))
    rules = CopyRules(what="copy", host_error=GuestPathError, hint="h", inside=root)
    with pytest.raises(GuestPathError, match="outside"):
        copy_tree(agent, "/g", root / "link", rules)  # type: ignore[arg-type]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_host_write_errors_use_the_callers_error_type(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    agent = LyingAgent()
    agent.folder("/g")
    rules = CopyRules(what="copy", host_error=UsageError, hint="pick another folder")
    with pytest.raises(UsageError, match="cannot write") as info:
        copy_tree(agent, "/g", tmp_path / "file" / "below", rules)  # type: ignore[arg-type]
    assert info.value.hint == "pick another folder"
