"""A registry that cannot be reached: the plan says so, and ``--no-build`` fails fast.

Real processes, a real registry client and a real closed port on 127.0.0.1; the cache is
empty so debian:12 is neither installed nor pulled, and nothing is ever built.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyro.cli.run_cmd import Reporter

pytestmark = pytest.mark.slow  # the registry client retries a refused connection

REPO = Path(__file__).resolve().parents[3]
HELLO = REPO / "examples" / "hello.yaml"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the socket is


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    address = f"127.0.0.1:{_closed_port()}"
    return {
        **{k: v for k, v in os.environ.items() if k not in ("PYRO_NO_BUILD", "PYRO_BACKEND")},
        "PYRO_CACHE_DIR": str(tmp_path / "cache"),
        "PYRO_STATE_DIR": str(tmp_path / "state"),
        "PYRO_ENV_REGISTRY": f"{address}/pyro",
        "ADDRESS": address,
    }


def pyro(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``pyro ARGS`` in a session of its own: if it ever starts a build, the whole build
    (make, compilers) is killed with it at the timeout."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pyro.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        pytest.fail(f"pyro {' '.join(args)} did not fail fast (a build started?)")
    assert "Traceback" not in out + err
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _buildable(plan: dict[str, object]) -> None:
    steps = plan["steps"]
    assert isinstance(steps, list)
    if steps[0]["action"] != "build":
        pytest.skip("this host cannot build debian:12 (pyro doctor): nothing would be built")


def test_plan_warns_that_it_builds_because_the_registry_is_unreachable(
    env: dict[str, str],
) -> None:
    done = pyro(env, "plan", str(HELLO), "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    _buildable(plan)
    (warning,) = plan["warnings"]
    assert warning["code"] == "environment.pull-unavailable"
    assert f"cannot reach registry {env['ADDRESS']}" in warning["message"]
    assert "built locally" in warning["message"] and "--no-build" in warning["hint"]
    text = pyro(env, "plan", str(HELLO))
    assert "warnings (1):" in text.stdout and env["ADDRESS"] in text.stdout


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_no_build_fails_fast_naming_the_registry(env: dict[str, str], how: str) -> None:
    _buildable(json.loads(pyro(env, "plan", str(HELLO), "--json").stdout))
    flag = ["--no-build"] if how == "flag" else []
    if how == "variable":
        env = {**env, "PYRO_NO_BUILD": "1"}
    plan = pyro(env, "plan", str(HELLO), *flag)
    assert plan.returncode == 1
    assert "environment.build-forbidden" in plan.stdout and env["ADDRESS"] in plan.stdout
    for args in (["apply", str(HELLO), *flag], ["run", "debian:12", *flag, "--", "true"]):
        done = pyro(env, *args)
        assert done.returncode == 125, done.stderr  # pyro could not run it
        assert done.stderr.startswith("error: ") and "builds are off" in done.stderr
        assert f"cannot reach registry {env['ADDRESS']}" in done.stderr
        assert "\nhint: " in done.stderr
    assert not (Path(env["PYRO_CACHE_DIR"]) / "kernels").exists()  # nothing was built


def test_a_bad_no_build_value_is_an_error(env: dict[str, str]) -> None:
    done = pyro({**env, "PYRO_NO_BUILD": "maybe"}, "plan", str(HELLO))
    assert done.returncode == 2
    assert "error: PYRO_NO_BUILD='maybe' is neither on nor off" in done.stderr


def test_the_reporter_shows_a_plan_warning_as_a_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Reporter(as_json=False).event("plan", "warning", {"message": "slow build", "hint": "h"})
    assert capsys.readouterr().err == "[plan] warning: slow build\n[plan] hint: h\n"
    Reporter(as_json=True).event("plan", "warning", {"message": "slow build", "hint": "h"})
    assert capsys.readouterr().err == ""


def test_env_pull_without_a_registry_does_not_build_when_builds_are_off(
    env: dict[str, str],
) -> None:
    without = {k: v for k, v in env.items() if k != "PYRO_ENV_REGISTRY"}
    done = pyro({**without, "PYRO_NO_BUILD": "1"}, "env", "pull", "debian:12")
    assert done.returncode == 1
    assert "error: environment 'debian:12' has no registry to be pulled from" in done.stderr
    assert "builds are off" in done.stderr and "PYRO_ENV_REGISTRY" in done.stderr
    assert not (Path(env["PYRO_CACHE_DIR"]) / "kernels").exists()
