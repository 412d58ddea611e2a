"""The doctor report's shape and the CLI's exit code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from pyro.cli.doctor_cmd import doctor
from pyro.host.doctor import doctor_report


def test_report_has_every_section() -> None:
    report = doctor_report()
    for key in ("platform", "host", "kvm", "backends", "tools", "dirs", "checks", "ok"):
        assert key in report
    assert [b["name"] for b in report["backends"]] == ["firecracker", "qemu-kvm", "qemu-tcg"]
    assert {c["status"] for c in report["checks"]} <= {"PASS", "WARN", "FAIL"}
    assert report["ok"] == all(c["status"] != "FAIL" for c in report["checks"])
    json.dumps(report)  # JSON-ready


def _fake(ok: bool) -> dict[str, Any]:
    report = doctor_report()
    report["ok"] = ok
    report["checks"].append(
        {"name": "fake", "status": "PASS" if ok else "FAIL", "detail": "injected"}
    )
    return report


@pytest.mark.parametrize(("ok", "code"), [(True, 0), (False, 1)])
def test_exit_code_follows_failures(monkeypatch: pytest.MonkeyPatch, ok: bool, code: int) -> None:
    monkeypatch.setattr("pyro.host.doctor.doctor_report", lambda: _fake(ok))
    human = CliRunner().invoke(doctor, [])
    assert human.exit_code == code
    assert ("[FAIL] fake: injected" in human.output) == (not ok)
    as_json = CliRunner().invoke(doctor, ["--json"])
    assert as_json.exit_code == code
    assert json.loads(as_json.output)["ok"] is ok


@pytest.mark.parametrize(
    ("value", "status", "detail"),
    [
        (None, "PASS", "run(s) may start at once (one per CPU)"),
        ("3", "PASS", "3 run(s) may start at once (PYRO_START_SLOTS)"),
        ("0", "PASS", "off (PYRO_START_SLOTS=0)"),
        ("many", "FAIL", "PYRO_START_SLOTS='many' is not a number of start slots"),
    ],
)
def test_start_slots_check(
    monkeypatch: pytest.MonkeyPatch, value: str | None, status: str, detail: str
) -> None:
    if value is None:
        monkeypatch.delenv("PYRO_START_SLOTS", raising=False)
    else:
        monkeypatch.setenv("PYRO_START_SLOTS", value)
    check = next(c for c in doctor_report()["checks"] if c["name"] == "start slots")
    assert check["status"] == status
    assert detail in check["detail"]
