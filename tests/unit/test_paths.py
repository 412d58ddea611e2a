"""Where pyro keeps its cache and state: the XDG folders (through platformdirs) and the
``PYRO_CACHE_DIR``/``PYRO_STATE_DIR`` overrides, with the same paths as before platformdirs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyro.paths import cache_dir, state_dir

XDG_AND_PYRO = ("XDG_CACHE_HOME", "XDG_STATE_HOME", "PYRO_CACHE_DIR", "PYRO_STATE_DIR")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $HOME with none of the variables that move pyro's folders set."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in XDG_AND_PYRO:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_defaults_are_the_xdg_defaults_under_home(home: Path) -> None:
    assert cache_dir() == home / ".cache" / "pyro"
    assert state_dir() == home / ".local" / "state" / "pyro"


def test_xdg_variables_move_both_folders(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "c"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "s"))
    assert cache_dir() == home / "c" / "pyro"
    assert state_dir() == home / "s" / "pyro"


def test_pyro_variables_win_over_xdg_and_are_used_as_given(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "c"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "s"))
    monkeypatch.setenv("PYRO_CACHE_DIR", "~/mine/cache")
    monkeypatch.setenv("PYRO_STATE_DIR", "relative/state")
    monkeypatch.chdir(home)
    assert cache_dir() == home / "mine" / "cache"  # no /pyro appended, ~ expanded
    assert state_dir() == home / "relative" / "state"  # made absolute against the cwd


def test_empty_pyro_variables_mean_unset(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_CACHE_DIR", "")
    monkeypatch.setenv("PYRO_STATE_DIR", "")
    assert cache_dir() == home / ".cache" / "pyro"
    assert state_dir() == home / ".local" / "state" / "pyro"


def test_importing_paths_does_not_import_platformdirs() -> None:
    # Commands given PYRO_*_DIR never need it; the others import it on first use.
    code = (
        "import json, sys, os\n"
        "os.environ['PYRO_CACHE_DIR'] = os.environ['PYRO_STATE_DIR'] = '/tmp/x'\n"
        "import pyro.paths as p\n"
        "p.cache_dir(); p.state_dir()\n"
        "before = 'platformdirs' in sys.modules\n"
        "del os.environ['PYRO_CACHE_DIR']\n"
        "p.cache_dir()\n"
        "print(json.dumps([before, 'platformdirs' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [False, True]
