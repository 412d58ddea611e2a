"""``-q/--quiet`` and ``-v/--verbose`` on commands that need no guest (runs: tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.cli.main import main
from pyro.environments.cache.store import Cache


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """debian:12 installed (two small files) in a cache of the test's own."""
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "vmlinux").write_bytes(b"kernel")
    (staged / "rootfs.ext4").write_bytes(b"rootfs")
    Cache().install("debian:12", staged, {"version": "12.0"})
    return "debian:12"


@pytest.mark.parametrize(
    "args",
    [["env", "pull", "-q"], ["-q", "env", "pull"], ["env", "--quiet", "pull"]],
)
def test_quiet_drops_the_markers_not_the_result(
    capsys: pytest.CaptureFixture[str], installed: str, args: list[str]
) -> None:
    code, out, err = call(capsys, *args, installed)
    assert code == 0 and err == ""
    assert out.startswith("debian:12 12.0 sha256:")


def test_without_quiet_the_marker_shows(capsys: pytest.CaptureFixture[str], installed: str) -> None:
    code, out, err = call(capsys, "env", "pull", installed)
    assert code == 0 and err == "[pull] phase=ready environment=debian:12\n"
    assert out.startswith("debian:12 12.0 sha256:")


def test_quiet_keeps_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = call(capsys, "-q", "plan", str(tmp_path / "missing.yaml"))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "\nhint: " in err


def test_quiet_and_verbose_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = call(capsys, "-q", "vm", "list", "-v")
    assert code == 2
    assert "-q/--quiet and -v/--verbose cannot be used together" in err


def test_verbose_lists_every_issue_of_a_spec_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: x}\n"
        "spec:\n  environment: debian:12\n  timeoutSeconds: 0\n"
        "  resources: {vcpus: 99}\n  steps: [{name: t, run: 'true'}]\n"
    )
    code, _, normal = call(capsys, "plan", str(spec))
    assert code == 1 and "(+1 more)" in normal
    assert "/spec/resources/vcpus" not in normal
    code, _, verbose = call(capsys, "plan", "-v", str(spec))
    assert code == 1
    lines = verbose.splitlines()
    assert lines[0] == normal.splitlines()[0]
    issues = [line for line in lines if line.startswith(f"  {spec}:")]
    assert len(issues) == 2
    assert any(":6:" in line and "/spec/timeoutSeconds" in line for line in issues)
    assert any("/spec/resources/vcpus" in line and "found 99" in line for line in issues)
    assert lines[-1].startswith("hint: ")
