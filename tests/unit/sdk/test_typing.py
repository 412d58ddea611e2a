"""A user's program, type-checked with ``mypy --strict`` as a wheel user would (no pydantic
plugin, pyro's own modules silenced like an installed package's): the SDK's calls and
results have real types, not ``Any``, and a wrong network policy is a type error."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

USER_PROGRAM = """\
from __future__ import annotations

import pyro
from pyro import AsyncPyro, CommandFailedError, Pyro, PyroError


def main() -> None:
    sdk = Pyro()
    plan = sdk.plan("hello.yaml")
    reveal_type(plan)  # expect: pyro.plan.model.Plan
    reveal_type(sdk.apply(plan, check=True))  # expect: pyro.execute.result.RunResult
    reveal_type(pyro.plan("hello.yaml"))  # expect: pyro.plan.model.Plan
    reveal_type(pyro.apply("hello.yaml"))  # expect: pyro.execute.result.RunResult
    run = sdk.run_in_vm("debian:12", "uname -a", network="egress", check=True)
    reveal_type(run.stdout)  # expect: str
    reveal_type(run.stderr)  # expect: str
    reveal_type(run.exit_code)  # expect: int | None
    reveal_type(run.steps[0])  # expect: pyro.execute.result.StepResult
    vm = sdk.create_vm("debian:12")
    reveal_type(vm)  # expect: pyro.machines.info.VMInfo
    reveal_type(sdk.exec_vm(vm.id, ["true"], check=True).stdout)  # expect: str
    task = sdk.create_task("debian:12")
    reveal_type(task)  # expect: pyro.tasks.manager.TaskInfo
    reveal_type(sdk.exec_task(task.id, "make", check=True))  # expect: pyro.tasks.ops.TaskExecOutput
    reveal_type(sdk.list_environments())  # expect: list[pyro.environments.status.EnvironmentStatus]
    try:
        sdk.run_in_vm("debian:12", "false", check=True)
    except CommandFailedError as error:
        reveal_type(error.exit_code)  # expect: int | None
        reveal_type(error.stdout)  # expect: str
    except PyroError as error:
        reveal_type(error.hint)  # expect: str


async def amain() -> None:
    async with AsyncPyro(warm_pool=1) as apyro:
        result = await apyro.run_in_vm("debian:12", "uname -a")
        reveal_type(result)  # expect: pyro.execute.result.RunResult
        reveal_type(await apyro.plan("hello.yaml"))  # expect: pyro.plan.model.Plan
        reveal_type(await apyro.exec_task("t", "ls"))  # expect: pyro.tasks.ops.TaskExecOutput


def wrong() -> None:
    Pyro().run_in_vm("debian:12", "true", network="everywhere")  # expect error: arg-type
    Pyro().run_in_vm("debian:12", "true", backend="qemu")  # expect error: arg-type
"""

MYPY = [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context"]
MYPY_INI = """\
[mypy]
strict = True

[mypy-pyro.*]
follow_imports = silent
"""


@pytest.mark.slow
def test_the_sdk_is_typed_under_mypy_strict(tmp_path: Path) -> None:
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed next to this Python (pip install -e .[dev])")
    (tmp_path / "user.py").write_text(USER_PROGRAM)
    (tmp_path / "mypy.ini").write_text(MYPY_INI)
    done = subprocess.run(
        [*MYPY, "--config-file", "mypy.ini", "--cache-dir", "cache", "user.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    found: dict[int, str] = {}
    errors: dict[int, str] = {}
    for line in done.stdout.splitlines():
        if match := re.match(r'user\.py:(\d+): note: Revealed type is "(.*)"$', line):
            found[int(match[1])] = match[2]
        elif match := re.match(r"user\.py:(\d+): error: .*\[([a-z-]+)\]$", line):
            errors[int(match[1])] = match[2]
    assert done.stderr == "" and found, done.stdout + done.stderr

    source = USER_PROGRAM.splitlines()
    want = _expected(source, "# expect: ")
    want_errors = _expected(source, "# expect error: ")
    assert found == want
    assert all("Any" not in revealed for revealed in found.values())
    assert errors == want_errors, done.stdout
    assert "Literal['off', 'egress']" in done.stdout


def _expected(source: list[str], marker: str) -> dict[int, str]:
    """Line number → what the comment ``marker`` at its end expects there."""
    return {n: line.split(marker)[1] for n, line in enumerate(source, 1) if marker in line}
