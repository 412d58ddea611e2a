"""``--cold`` turns warm starts off for one command only."""

from __future__ import annotations

import os

import pytest

from pyro.cli.run_cmd import _forced_cold
from pyro.vmm.snapshot import warm_enabled


def test_cold_flag_turns_warm_starts_off_and_restores_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYRO_WARM", raising=False)
    with _forced_cold(True):
        assert not warm_enabled()
    assert "PYRO_WARM" not in os.environ
    monkeypatch.setenv("PYRO_WARM", "1")
    with pytest.raises(SystemExit), _forced_cold(True):
        assert not warm_enabled()
        raise SystemExit(3)  # how a command ends
    assert os.environ["PYRO_WARM"] == "1"
    with _forced_cold(False):
        assert warm_enabled()
