"""Fuzzing the three inputs pyro takes from outside: spec documents, agent frames, CLI argv.

Small counts here (CI time); ``make soak`` runs the same checks thousands of times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from unit.fuzz.fuzzlib import (
    check_cli_argv,
    check_hostile_guest,
    check_spec_data,
    check_spec_text,
    cli_argvs,
    hostile_sessions,
    spec_documents,
    spec_texts,
)

_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@_SETTINGS
@given(text=spec_texts)
def test_spec_text_never_crashes(text: str) -> None:
    check_spec_text(text, Path("/nonexistent-base"))


@_SETTINGS
@given(doc=spec_documents())
def test_spec_data_never_crashes(doc: dict[str, Any]) -> None:
    check_spec_data(doc, Path("/nonexistent-base"))


@settings(_SETTINGS, max_examples=60)
@given(session=hostile_sessions)
def test_hostile_guest_frames_are_refused(session: tuple[bool, list[bytes], str, bool]) -> None:
    check_hostile_guest(session)


@pytest.fixture
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYRO_ENV_REGISTRY", "127.0.0.1:9/none")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@settings(_SETTINGS, max_examples=60)
@given(argv=cli_argvs)
def test_cli_argv_exit_codes(argv: list[str], private_dirs: Path) -> None:
    check_cli_argv(argv)


def test_nul_bytes_in_ids_and_paths_are_errors_not_crashes(tmp_path: Path) -> None:
    """Found by the fuzz: SDK/MCP callers can pass NUL bytes that no OS argv can carry."""
    from pyro.errors import NotFoundError, SpecError
    from pyro.machines.registry import VMRegistry
    from pyro.spec.load import load_spec_documents

    with pytest.raises(NotFoundError):
        VMRegistry(tmp_path).get("ab\x00cd")
    with pytest.raises(SpecError, match="not a valid path"):
        load_spec_documents("spec\x00.yaml")
