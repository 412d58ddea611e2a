"""Flag errors in flag terms, ``PYRO_BACKEND`` checked by every command, and the ``--`` hint.

Driven through :func:`pyro.cli.main.main` in-process; nothing here boots a guest: every
case fails before a VM could be made (the state folder is checked to stay empty).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from pyro.cli.errors import PASSTHROUGH
from pyro.cli.flags import BACKENDS, VCPUS
from pyro.cli.guest_command import HintedUsageError, check_option_order
from pyro.cli.main import cli, main
from pyro.spec.model import Backend

ROOT = Path(__file__).parents[3]
HELLO = ROOT / "examples" / "hello.yaml"


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PYRO_BACKEND", raising=False)
    yield tmp_path / "state"
    vms = tmp_path / "state" / "vms"
    assert not (vms.is_dir() and any(vms.iterdir())), "a failing command made a VM"


def usage_code(args: tuple[str, ...] | list[str]) -> int:
    """2, or 125 from a command whose exit code is its guest's (docs/public-contract.md)."""
    words = [arg for arg in args if not arg.startswith("-")]
    passthrough = any(tuple(words[: len(names)]) == names for names in PASSTHROUGH)
    return 125 if passthrough else 2


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["run", "--vcpus", "0", "debian:12", "--", "true"], "--vcpus"),
        (["run", "debian:12", "--vcpus", "33", "--", "true"], "--vcpus"),
        (["run", "--memory-mib", "64", "debian:12", "--", "true"], "--memory-mib"),
        (["run", "--timeout-seconds", "0", "debian:12", "--", "true"], "--timeout-seconds"),
        (["run", "--backend", "qemu", "debian:12", "--", "true"], "--backend"),
        (["vm", "create", "--vcpus", "0", "debian:12"], "--vcpus"),
        (["vm", "create", "--ttl-seconds", "0", "debian:12"], "--ttl-seconds"),
        (["vm", "exec", "--timeout-seconds", "0", "abc", "--", "true"], "--timeout-seconds"),
        (["vm", "logs", "--tail", "-1", "abc"], "--tail"),
        (["task", "create", "--memory-mib", "1", "debian:12"], "--memory-mib"),
        (["task", "create", "--idle-timeout-seconds", "0", "debian:12"], "--idle-timeout-seconds"),
        (["task", "exec", "--timeout-seconds", "0", "abc", "--", "true"], "--timeout-seconds"),
    ],
)
def test_an_out_of_range_flag_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    code, out, err = call(capsys, *args)
    assert code == usage_code(args) and out == ""
    assert f"'{flag}'" in err
    assert "spec" not in err.lower()


def test_vcpus_0_says_vcpus_and_its_range_in_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, "run", "--json", "--vcpus", "0", "debian:12", "--", "true")
    assert code == 125
    error = json.loads(out)["error"]
    assert error["type"] == "UsageError"
    assert "'--vcpus'" in error["message"] and "1<=x<=32" in error["message"]


def test_flag_ranges_are_the_spec_models() -> None:
    assert (VCPUS.min, VCPUS.max) == (1, 32)
    assert list(BACKENDS.choices) == [member.value for member in Backend]


def test_what_only_the_spec_checks_is_still_said_in_flag_terms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = call(capsys, "run", "bad name!", "--", "true")
    assert code == 125
    assert err.startswith("error: ENVIRONMENT: environment is not a catalog name")
    assert "/spec/" not in err and "<spec>" not in err
    assert "hint: see 'pyro run --help'" in err
    code, _, err = call(capsys, "run", "--env", "1X=y", "debian:12", "--", "true")
    assert code == 125 and err.startswith("error: --env '1X=y' is not NAME=VALUE")


def test_an_environment_spec_file_keeps_its_own_spec_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "env.yaml"
    broken.write_text("apiVersion: pyro/v1\nkind: Environment\nmetadata: {name: x}\nspec: {}\n")
    code, _, err = call(capsys, "run", str(broken), "--", "true")
    assert code == 125  # pyro's own failure, out of the guest's range
    assert str(broken) in err and "ENVIRONMENT" not in err


# --- PYRO_BACKEND -----------------------------------------------------------------------


def _leaf_commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield path


LEAVES = sorted(_leaf_commands(cli))


def test_the_command_tree_is_walked() -> None:
    assert ("run",) in LEAVES and ("task", "snapshot", "create") in LEAVES
    assert ("completion",) in LEAVES and len(LEAVES) > 30


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_refuses_a_bad_pyro_backend(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, path: tuple[str, ...]
) -> None:
    monkeypatch.setenv("PYRO_BACKEND", "qemu")
    code, out, err = call(capsys, *path)
    assert code == usage_code(path) and out == ""
    assert err.startswith("error: PYRO_BACKEND is 'qemu', which is not a backend; ")
    assert "auto, firecracker, qemu-kvm, qemu-tcg" in err
    assert "hint: set PYRO_BACKEND to one of those, or unset it" in err


def test_a_bad_pyro_backend_in_json_mode(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_BACKEND", "kvm")
    code, out, _ = call(capsys, "vm", "list", "--json")
    assert code == 2
    document = json.loads(out)
    assert document["ok"] is False and "PYRO_BACKEND" in document["error"]["message"]


@pytest.mark.parametrize("value", ["qemu-tcg", "auto", ""])
def test_a_good_or_empty_pyro_backend_passes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PYRO_BACKEND", value)
    code, out, _ = call(capsys, "vm", "list")
    assert code == 0 and out == "no VMs\n"


# --- the guest command after `--` -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "word", "suggestion"),
    [
        (["run", "debian:12", "sh", "-c", "echo x"], "-c", "pyro run debian:12 -- sh -c 'echo x'"),
        (["run", "debian:12", "grep", "-q", "x", "f"], "-q", "pyro run debian:12 -- grep -q x f"),
        (["run", "--vcpus", "2", "debian:12", "ls", "-v"], "-v", "pyro run --vcpus 2 "),
        (["vm", "exec", "abc", "ls", "-l"], "-l", "pyro vm exec abc -- ls -l"),
        (["task", "exec", "abc", "--cwd", "/w", "make", "-j2"], "-j2", "pyro task exec abc --cwd"),
    ],
)
def test_an_option_after_the_guest_command_gets_the_dash_dash_hint(
    capsys: pytest.CaptureFixture[str], args: list[str], word: str, suggestion: str
) -> None:
    code, out, err = call(capsys, *args)
    assert code == usage_code(args) and out == ""
    assert f"Error: {word!r} comes after the guest command" in err
    assert f"hint: put the guest command after '--': {suggestion}" in err


def test_the_dash_dash_hint_in_json_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, "run", "--json", "debian:12", "sh", "-c", "x")
    assert code == 125
    error = json.loads(out)["error"]
    assert error["hint"] == "put the guest command after '--': pyro run --json debian:12 -- sh -c x"


@pytest.mark.parametrize(
    "args",
    [
        ["debian:12", "--", "sh", "-c", "x"],
        ["--vcpus", "2", "debian:12", "--json", "--", "ls", "-l"],
        ["debian:12", "--env", "A=1", "--", "true"],
        ["--env", "A=1", "debian:12", "true"],
        ["debian:12", "echo", "-"],
    ],
)
def test_options_before_the_guest_command_or_after_dash_dash_are_fine(args: list[str]) -> None:
    run = cli.get_command(click.Context(cli), "run")
    assert run is not None
    check_option_order(run, click.Context(run, info_name="run"), args)


def test_an_option_value_is_not_the_guest_command() -> None:
    run = cli.get_command(click.Context(cli), "run")
    assert run is not None
    ctx = click.Context(run, info_name="run")
    # "2" is --vcpus's value and "debian:12" the environment: no guest command yet.
    check_option_order(run, ctx, ["--vcpus", "2", "debian:12", "--json", "--", "x"])
    with pytest.raises(HintedUsageError):
        check_option_order(run, ctx, ["--json", "debian:12", "x", "--json"])
