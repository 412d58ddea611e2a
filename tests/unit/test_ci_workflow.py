"""The example GitHub Actions workflow has the shape of one that would work.

It is not run on GitHub here; tests/e2e/test_ci_runner.py plays its steps on a local
registry as a non-root user. This checks the file itself: valid YAML, the steps in order
(install from a package index, KVM where the runner has it, doctor, registry credentials
and pull, apply with --junit and builds off, the report published by a well-known action),
and that every ``pyro`` command line in it parses with pyro's own CLI.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from pyro.cli.main import cli
from pyro.spec.load import load_spec

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "examples" / "ci" / "github-actions.yml"
PUBLISHERS = ("mikepenz/action-junit-report@", "dorny/test-reporter@")


def _job() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text("utf-8"))
    assert workflow["permissions"]["checks"] == "write"  # to publish the report as a check
    job: dict[str, Any] = workflow["jobs"]["apply"]
    return job


def _index(steps: list[dict[str, Any]], needle: str) -> int:
    found = [i for i, step in enumerate(steps) if needle in step.get("run", step.get("uses", ""))]
    assert found, f"no step runs or uses {needle!r}"
    return found[0]


def _pyro_lines(steps: list[dict[str, Any]]) -> list[list[str]]:
    lines = [
        shlex.split(line)
        for step in steps
        for line in step.get("run", "").splitlines()
        if line.strip().startswith(("pyro ", "sudo pyro"))
    ]
    return lines


def test_the_steps_come_in_an_order_that_works() -> None:
    job = _job()
    steps = job["steps"]
    install = _index(steps, "pip install")
    assert "--extra-index-url" in steps[install]["run"] or ".whl" in steps[install]["run"]
    kvm = _index(steps, "/dev/kvm")
    assert "udevadm trigger" in steps[kvm]["run"] and "99-kvm" in steps[kvm]["run"]
    doctor = _index(steps, "pyro doctor")
    pull = _index(steps, "pyro env pull debian:12")
    apply = _index(steps, "pyro apply examples/hello.yaml")
    publish = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith(PUBLISHERS))
    assert install < doctor < pull < apply < publish and kvm < doctor
    assert _index(steps, "qemu-system-x86") < apply

    # the registry the team pushed to, its credentials, and no local builds
    env = job["env"]
    assert env["PYRO_ENV_REGISTRY"] and env["PYRO_NO_BUILD"] == "1"
    assert {"PYRO_REGISTRY_USERNAME", "PYRO_REGISTRY_PASSWORD"} <= set(env)
    assert "linux-source" not in WORKFLOW.read_text()  # nothing is built on the runner

    # the report apply writes is the one published, also when apply failed
    words = shlex.split(steps[apply]["run"])
    report = words[words.index("--junit") + 1]
    assert steps[publish]["if"] == "always()"
    assert steps[publish]["with"]["report_paths"] == report


def test_every_pyro_command_parses_and_none_runs_as_root() -> None:
    lines = _pyro_lines(_job()["steps"])
    assert len(lines) >= 5
    for words in lines:
        assert words[0] == "pyro", f"the runner is not root: {shlex.join(words)}"
        command: click.Command = cli
        ctx = command.make_context("pyro", words[1:], resilient_parsing=False)
        args = [*ctx._protected_args, *ctx.args]
        while isinstance(command, click.Group) and args:
            sub = command.get_command(ctx, args[0])
            assert sub is not None, f"no such command in {shlex.join(words)}"
            command, ctx = sub, sub.make_context(args[0], args[1:], parent=ctx)
            args = [*ctx._protected_args, *ctx.args] if isinstance(sub, click.Group) else []


def test_the_spec_it_applies_is_a_run() -> None:
    assert load_spec(REPO / "examples" / "hello.yaml").spec.kind == "Run"
