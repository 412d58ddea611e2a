"""A CI runner, played here: what examples/ci/github-actions.yml does, as a non-root user.

The runner is a user without root and without the checkout: pyro comes from the wheel
(built by scripts/dist_check.py's machinery) installed into a fresh venv that user owns; the
environment comes from a registry the team pushed to (``pyro env push``, here a local
``docker-registry``) into the user's own default cache (``$HOME/.cache/pyro``); builds are
off (``PYRO_NO_BUILD=1``, as the workflow sets); the backend is what ``pyro doctor`` picks for
that user (KVM when it may open /dev/kvm, TCG otherwise); ``pyro apply --junit`` runs a spec
whose last step fails, and the report is parsed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.registry import Registry, running_registry

pytestmark = [pytest.mark.guest, pytest.mark.registry, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
USER = "pyro-ci-runner"
SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: ci-check}
spec:
  environment: "debian:12"
  timeoutSeconds: 300
  steps:
    - {name: greet, run: 'echo "hello from the runner"'}
    - {name: version, run: "git --version"}
    - {name: tests, run: 'echo "1 of 2 checks failed" >&2; exit 3'}
"""


@dataclass(frozen=True)
class Runner:
    """A non-root user with a home, a fresh venv holding the wheel, and a project folder."""

    uid: int
    gid: int
    home: Path
    bin_dir: Path
    project: Path
    env: dict[str, str]

    def run(self, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix(), *map(str, args)],
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def prefix(self) -> list[str]:
        """How a command runs as the runner: through setpriv when the test runs as root."""
        if os.geteuid() == self.uid:
            return []
        setpriv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return [*setpriv, "--"]

    def pyro(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.run(self.bin_dir / "pyro", *args, timeout=timeout)


@pytest.fixture(scope="module")
def user() -> Iterator[pwd.struct_passwd]:
    """A dedicated non-root user (created here, removed afterwards); the test's own user
    when that is not root already."""
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.geteuid())
        return
    if shutil.which("setpriv") is None or shutil.which("useradd") is None:
        pytest.skip("needs setpriv and useradd (util-linux, passwd)")
    created = False
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
        )
        created = True
        entry = pwd.getpwnam(USER)
    assert entry.pw_uid != 0
    yield entry
    if created:
        subprocess.run(["userdel", USER], check=False, capture_output=True)


@pytest.fixture(scope="module")
def runner(user: pwd.struct_passwd, guest_install: Any) -> Iterator[Runner]:
    from scripts.dist_check import build, make_venv

    work = Path(tempfile.mkdtemp(prefix="pyro-ci-runner-"))
    try:
        os.chmod(work, 0o755)
        _, wheel = build(work / "dist")  # the team's build of the wheel
        home = work / "home"
        project = work / "project"
        for folder in (home, project):
            folder.mkdir()
            if os.geteuid() == 0:
                os.chown(folder, user.pw_uid, user.pw_gid)
        os.chmod(wheel, 0o644)
        bin_dir = home / "venv" / "bin"
        env = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYRO_NO_BUILD": "1",
        }
        runner = Runner(user.pw_uid, user.pw_gid, home, bin_dir, project, env)
        make_venv(home / "venv", wheel, prefix=runner.prefix(), env=env)
        assert (home / "venv").stat().st_uid == user.pw_uid
        yield runner
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Pushing:
    """The registry the team pushes debian:12 to, and the push (running meanwhile)."""

    registry: Registry
    push: subprocess.Popen[str]

    def pushed(self) -> Registry:
        _, err = self.push.communicate(timeout=600)
        assert self.push.returncode == 0, err
        return self.registry


@pytest.fixture(scope="module")
def team_registry(
    tmp_path_factory: pytest.TempPathFactory, guest_install: Any
) -> Iterator[Pushing]:
    """debian:12 pushed from the developer's cache, while the runner's venv is made."""
    with running_registry(tmp_path_factory.mktemp("ci-registry")) as registry:
        ref = registry.ref("pyro/debian", "12")
        push = subprocess.Popen(
            [sys.executable, "-m", "pyro.cli", "env", "push", "debian:12", ref],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            yield Pushing(registry, push)
        finally:
            if push.poll() is None:
                push.kill()
            push.communicate()


def test_a_non_root_runner_pulls_applies_and_reports(
    team_registry: Pushing, runner: Runner
) -> None:
    registry = team_registry.pushed()
    env = {**runner.env, "PYRO_ENV_REGISTRY": f"{registry.address}/pyro"}
    runner = dataclasses.replace(runner, env=env)

    who = runner.run("id", "-u")
    assert who.stdout.strip() == str(runner.uid) != "0"
    doctor = runner.pyro("doctor", "--json")
    backend = json.loads(doctor.stdout)["selected_backend"]
    assert backend in ("qemu-kvm", "qemu-tcg", "firecracker"), doctor.stdout
    pulled = runner.pyro("env", "pull", "debian:12")
    assert pulled.returncode == 0, pulled.stderr
    installed = runner.home / ".cache" / "pyro" / "environments"
    assert installed.is_dir() and installed.stat().st_uid == runner.uid

    (runner.project / "ci.yaml").write_text(SPEC)
    applied = runner.pyro("apply", "ci.yaml", "--junit", "reports/pyro-junit.xml")
    # The failing step's exit code, passed through (not 1, not 125: pyro did its job).
    assert applied.returncode == 3, applied.stderr
    assert f"backend={backend}" in applied.stderr
    assert "hello from the runner" in applied.stdout

    report = runner.project / "reports" / "pyro-junit.xml"
    assert report.stat().st_uid == runner.uid
    root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["greet", "version", "tests"]
    assert "hello from the runner" in (cases["greet"].findtext("system-out") or "")
    assert (cases["version"].findtext("system-out") or "").startswith("git version")
    failure = cases["tests"].find("failure")
    assert failure is not None and "1 of 2 checks failed" in (failure.text or "")
    assert cases["greet"].find("failure") is None

    vms = runner.home / ".local" / "state" / "pyro" / "vms"
    assert not vms.is_dir() or list(vms.iterdir()) == []  # the runner's VM is gone
