"""``--cold`` and ``--no-build`` act for one command only, through their variables."""

from __future__ import annotations

import os

import pytest

from pyro.cli.envflags import NO_BUILD_ENV
from pyro.cli.run_cmd import _env_flags
from pyro.environments import catalog
from pyro.environments.catalog import builds_forbidden
from pyro.errors import UsageError
from pyro.vmm.snapshot import warm_enabled


def test_cold_flag_turns_warm_starts_off_and_restores_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYRO_WARM", raising=False)
    with _env_flags(True):
        assert not warm_enabled()
    assert "PYRO_WARM" not in os.environ
    monkeypatch.setenv("PYRO_WARM", "1")
    with pytest.raises(SystemExit), _env_flags(True):
        assert not warm_enabled()
        raise SystemExit(3)  # how a command ends
    assert os.environ["PYRO_WARM"] == "1"
    with _env_flags(False):
        assert warm_enabled()


def test_no_build_flag_forbids_builds_for_the_command_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert NO_BUILD_ENV == catalog.NO_BUILD_ENV
    monkeypatch.delenv(NO_BUILD_ENV, raising=False)
    assert not builds_forbidden()
    with _env_flags(False, no_build=True):
        assert builds_forbidden() and warm_enabled()
    assert NO_BUILD_ENV not in os.environ


@pytest.mark.parametrize(
    ("value", "forbidden"), [("1", True), (" TRUE ", True), ("0", False), ("", False)]
)
def test_no_build_variable_values(
    monkeypatch: pytest.MonkeyPatch, value: str, forbidden: bool
) -> None:
    monkeypatch.setenv(NO_BUILD_ENV, value)
    assert builds_forbidden() is forbidden


def test_a_bad_no_build_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NO_BUILD_ENV, "sometimes")
    with pytest.raises(UsageError) as caught:
        builds_forbidden()
    assert "PYRO_NO_BUILD='sometimes'" in caught.value.summary
    assert caught.value.hint and "PYRO_NO_BUILD=1" in caught.value.hint
