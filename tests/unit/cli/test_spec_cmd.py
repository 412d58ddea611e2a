"""``pyro validate`` and ``pyro plan`` through click's runner (inventory faked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import pyro.host.gather
from pyro.cli.main import cli
from pyro.plan.inventory import BackendInfo, HostInfo, InstalledEnvironment, Inventory


def inventory(variant: str, **changes: object) -> Inventory:
    """A fixed host with debian:12 installed and qemu-tcg usable (``installed`` only)."""
    assert variant == "installed"
    base = Inventory(
        host=HostInfo(arch="x86_64", cpus=2, memory_mib=4096, kvm="pvm"),
        backends=[BackendInfo(name="qemu-tcg", usable=True)],
        installed=[
            InstalledEnvironment(
                name="debian:12",
                version="1.0.0",
                digest="sha256:" + "1" * 64,
                content_digest="sha256:" + "5" * 64,
            )
        ],
    )
    return base.model_copy(update=changes)


ROOT = Path(__file__).parents[3]
HELLO = str(ROOT / "examples" / "hello.yaml")

BAD = """apiVersion: pyro/v1
kind: Run
metadata: {name: bad}
spec:
  environment: "debian:12"
  timeoutSeconds: -1
  steps: []
"""


@pytest.fixture
def fake_inventory(monkeypatch: pytest.MonkeyPatch) -> list[Inventory]:
    chosen = [inventory("installed")]

    def gather(**_: object) -> Inventory:
        return chosen[0]

    monkeypatch.setattr(pyro.host.gather, "gather_inventory", gather)
    return chosen


@pytest.fixture
def bad_spec(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return str(path)


def test_validate_valid_files() -> None:
    result = CliRunner().invoke(cli, ["validate", HELLO])
    assert result.exit_code == 0, result.output
    assert "hello.yaml: ok (1 document)" in result.output
    assert "1 file valid" in result.output


def test_validate_reports_every_issue_with_location(bad_spec: str) -> None:
    result = CliRunner().invoke(cli, ["validate", HELLO, bad_spec])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(
        line.startswith(f"{bad_spec}:6:") and "/spec/timeoutSeconds" in line for line in lines
    )
    assert any("/spec/steps" in line for line in lines)
    assert lines[-1].startswith("1 of 2 files invalid, 2 issues")


def test_validate_json(bad_spec: str) -> None:
    result = CliRunner().invoke(cli, ["validate", "--json", HELLO, bad_spec])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    good, bad = data["files"]
    assert good == {
        "path": HELLO,
        "ok": True,
        "documents": [{"index": 0, "kind": "Run", "name": "hello"}],
        "issues": [],
    }
    assert bad["ok"] is False and len(bad["issues"]) == 2
    assert {issue["pointer"] for issue in bad["issues"]} == {"/spec/timeoutSeconds", "/spec/steps"}
    assert {"file", "line", "column", "message", "expected", "found"} <= set(bad["issues"][0])


def test_validate_missing_file_is_an_issue(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.yaml"), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["files"][0]["ok"] is False


def test_plan_text(fake_inventory: list[Inventory]) -> None:
    result = CliRunner().invoke(cli, ["plan", HELLO])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "plan hello: debian:12 (debian:12 1.0.0, installed) on qemu-tcg"
    )
    assert "applyable: yes" in result.stdout


def test_plan_json_flag_after_positional(fake_inventory: list[Inventory]) -> None:
    result = CliRunner().invoke(cli, ["plan", HELLO, "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["kind"] == "Plan" and data["applyable"] is True


def test_plan_not_applyable_prints_then_exits_1(fake_inventory: list[Inventory]) -> None:
    fake_inventory[0] = inventory("installed", backends=[])
    result = CliRunner().invoke(cli, ["plan", "--json", HELLO])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["applyable"] is False and data["errors"][0]["code"] == "backend.none"
    human = CliRunner().invoke(cli, ["plan", HELLO])
    assert human.exit_code == 1
    assert "hint: run 'pyro doctor'" in human.stdout and "applyable: no" in human.stdout


def test_plan_invalid_spec_is_a_pyro_error(bad_spec: str, fake_inventory: list[Inventory]) -> None:
    result = CliRunner().invoke(cli, ["plan", bad_spec, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["error"]["type"] == "SpecError"
    assert len(data["error"]["issues"]) == 2


TEMPLATED = """apiVersion: pyro/v1
kind: Run
metadata: {name: "{{ vars.NAME }}"}
spec:
  environment: "debian:12"
  steps: [{name: hi, run: "echo {{ vars.WORD }}"}]
"""


def test_plan_vars_and_vars_file(tmp_path: Path, fake_inventory: list[Inventory]) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text(TEMPLATED)
    varsfile = tmp_path / "v.yaml"
    varsfile.write_text("NAME: from-file\nWORD: file\n")
    args = ["plan", str(spec), "--vars-file", str(varsfile), "--var", "WORD=cli", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["metadata"]["name"] == "from-file"
    assert data["steps"][1]["argv"][-1] == "echo cli"


def test_plan_missing_var_is_located(tmp_path: Path, fake_inventory: list[Inventory]) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text(TEMPLATED)
    result = CliRunner().invoke(cli, ["plan", str(spec)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "NAME" in result.stderr


@pytest.mark.parametrize("item", ["NOEQUALS", "=x", "1A=b"])
def test_plan_bad_var_is_a_usage_error(item: str, fake_inventory: list[Inventory]) -> None:
    result = CliRunner().invoke(cli, ["plan", HELLO, "--var", item])
    assert result.exit_code == 2
    assert "is not NAME=VALUE" in result.stderr


def test_plan_of_environment_only_file(fake_inventory: list[Inventory]) -> None:
    env = str(ROOT / "pyro" / "data" / "environments" / "debian-12.yaml")
    result = CliRunner().invoke(cli, ["plan", env])
    assert result.exit_code == 2
    assert "no Run document" in result.stderr


def test_version() -> None:
    from pyro.__about__ import CATALOG_VERSION, __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"pyro {__version__} (catalog {CATALOG_VERSION})\n"


MULTI = """apiVersion: pyro/v1
kind: Environment
metadata: {name: "tools:1"}
spec:
  version: 1.2.0
  kernel: {fragment: kernels/pyro-6.1.config}
  rootfs: {packages: [gcc]}
  defaults: {vcpus: 1, memoryMiB: 256}
---
apiVersion: pyro/v1
kind: Run
metadata: {name: uses-tools}
spec:
  environment: "tools:1"
  steps: [{name: cc, run: "cc --version"}]
"""


def test_plan_uses_environment_documents_of_the_same_file(tmp_path: Path) -> None:
    spec = tmp_path / "multi.yaml"
    spec.write_text(MULTI)
    missing = CliRunner().invoke(cli, ["plan", str(spec)])
    assert missing.exit_code == 1
    assert missing.stderr.startswith(f"error: {spec}") and "fragment" in missing.stderr

    (tmp_path / "kernels").mkdir()
    fragment = ROOT / "pyro" / "data" / "environments" / "kernels" / "pyro-6.1.config"
    (tmp_path / "kernels" / "pyro-6.1.config").write_bytes(fragment.read_bytes())
    result = CliRunner().invoke(cli, ["plan", str(spec), "--json"])
    data = json.loads(result.stdout)
    assert data["environment"]["name"] == "tools:1"
    assert data["environment"]["origin"] in ("build", "installed")
    assert data["resources"] == {"vcpus": 1, "memory_mib": 256}


def test_plan_offline_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def gather(**kwargs: object) -> Inventory:
        seen.update(kwargs)
        return inventory("installed")

    monkeypatch.setattr(pyro.host.gather, "gather_inventory", gather)
    assert CliRunner().invoke(cli, ["plan", "--offline", HELLO]).exit_code == 0
    assert seen["resolve_remote"] is False and seen["refs"] == ["debian:12"]
