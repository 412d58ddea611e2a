"""``spec.matrix`` expanded purely: names, values, rendering, artifacts, bounds, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyro.errors import SpecError, UsageError
from pyro.execute.prepare import make_plan, prepare
from pyro.spec import limits
from pyro.spec.load import load_spec, load_spec_documents
from pyro.spec.model import RunSpec

SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata:
  name: ci
spec:
  environment: debian:12
  matrix:
{matrix}
  steps:
    - name: test
      run: echo py={{{{ vars.python }}}} shard={{{{ vars.shard }}}}
  artifacts:
    - source: /work/out
      target: out/
    - source: /work/report.xml
      target: reports/report.xml
"""


def write(tmp_path: Path, matrix: str, spec: str = SPEC) -> Path:
    path = tmp_path / "ci.yaml"
    path.write_text(spec.format(matrix=textwrap.indent(matrix, "    ")), encoding="utf-8")
    return path


def issues(error: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [issue.render() for issue in error.value.issues]


def test_every_combination_is_an_instance_named_by_its_values(tmp_path: Path) -> None:
    path = write(tmp_path, 'python: ["3.11", "3.12"]\nshard: {range: 3}')
    (document,) = load_spec_documents(path)
    names = [instance.name for instance in document.instances]
    assert names == [
        f"ci[python={python},shard={shard}]" for python in ("3.11", "3.12") for shard in range(3)
    ]
    last = document.instances[-1]
    assert last.values == {"python": "3.12", "shard": 2}
    assert last.spec.spec.steps[0].run == "echo py=3.12 shard=2"
    assert last.spec.spec.matrix is None
    assert document.spec.spec.matrix is not None  # the document itself keeps it


def test_each_instance_writes_its_artifacts_under_its_own_name(tmp_path: Path) -> None:
    (document,) = load_spec_documents(write(tmp_path, 'python: ["3.11"]\nshard: {range: 1}'))
    (instance,) = document.instances
    targets = [artifact.target for artifact in instance.spec.spec.artifacts]
    assert targets == [
        "out/ci[python=3.11,shard=0]/",
        "reports/ci[python=3.11,shard=0]/report.xml",
    ]


def test_each_instance_has_its_own_plan_digest(tmp_path: Path) -> None:
    from pyro.cluster.instances import plan_jobs

    path = write(tmp_path, 'python: ["3.11", "3.12"]\nshard: {range: 2}')
    jobs = plan_jobs(prepare(path), resolve_remote=False)
    assert [job.name for job in jobs] == [i.name for i in prepare(path).loaded.instances]
    assert len({job.plan.digest for job in jobs}) == 4
    assert jobs[1].values == {"python": "3.11", "shard": 1}
    exec_step = jobs[1].plan.step("exec.test")
    assert exec_step.argv[-1] == "echo py=3.11 shard=1"  # type: ignore[union-attr]


def test_a_matrix_is_not_planned_as_one_run(tmp_path: Path) -> None:
    path = write(tmp_path, 'python: ["3.11"]\nshard: {range: 2}')
    with pytest.raises(UsageError, match="is a matrix of 2 instances"):
        make_plan(prepare(path), resolve_remote=False)


def test_other_variables_still_render_and_an_axis_given_as_a_variable_is_refused(
    tmp_path: Path,
) -> None:
    spec = SPEC.replace("name: test", "name: test-{{{{ vars.suffix }}}}")
    path = write(tmp_path, 'python: ["3.11"]\nshard: {range: 1}', spec)
    (document,) = load_spec_documents(path, vars={"suffix": "x"})
    assert document.instances[0].spec.spec.steps[0].name == "test-x"
    with pytest.raises(SpecError) as error:
        load_spec_documents(path, vars={"suffix": "x", "shard": 3})
    assert "matrix axis 'shard' is also given as a variable" in issues(error)[0]
    assert "ci.yaml:9:5:" in issues(error)[0]  # the line of the axis


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ("shard: {range: 100000}", "value out of range"),
        ("a: {range: 64}\nb: {range: 64}", "expands to 4096 instances; at most 256"),
        ("python: [3.10]", "wrong type"),
        ('python: ["3.11", "3.11"]', "lists a value twice"),
        ("python: []", "too few items"),
        ('Python: ["x"]', "invalid key"),
        ('python: ["a b"]', "invalid value"),
        ("python: {range: 0}", "value out of range"),
        ("python: {count: 2}", "unknown key 'count'"),
    ],
)
def test_a_bad_or_hostile_matrix_is_refused_before_anything_renders(
    tmp_path: Path, matrix: str, message: str
) -> None:
    with pytest.raises(SpecError) as error:
        load_spec_documents(write(tmp_path, matrix))
    rendered = issues(error)
    assert any(message in line and "/spec/matrix" in line for line in rendered), rendered


def test_the_instance_cap_is_the_documented_limit(tmp_path: Path) -> None:
    cap = limits.MATRIX_INSTANCES
    (document,) = load_spec_documents(write(tmp_path, f"python: ['x']\nshard: {{range: {cap}}}"))
    assert len(document.instances) == cap
    with pytest.raises(SpecError, match=f"expands to {cap * 2} instances"):
        load_spec_documents(write(tmp_path, f"python: ['x', 'y']\nshard: {{range: {cap}}}"))


def test_a_large_spec_times_many_instances_passes_the_render_budget(tmp_path: Path) -> None:
    big = SPEC.replace("name: ci", "name: ci\n  description: " + "x" * 1000) + (
        "# " + "y" * 200_000 + "\n"
    )
    with pytest.raises(SpecError, match="past the budget"):
        load_spec_documents(write(tmp_path, "a: {range: 16}\nb: {range: 16}", big))


def test_an_invalid_instance_names_itself(tmp_path: Path) -> None:
    spec = SPEC.replace(
        "run: echo", "timeoutSeconds: {{{{ 0 if vars.shard == 1 else 5 }}}}\n      run: echo"
    )
    with pytest.raises(SpecError) as error:
        load_spec_documents(write(tmp_path, 'python: ["3.11"]\nshard: {range: 2}', spec))
    assert "in matrix instance ci[python=3.11,shard=1]" in (error.value.hint or "")
    assert "timeoutSeconds" in issues(error)[0]


def test_only_one_run_of_a_file_may_have_a_matrix(tmp_path: Path) -> None:
    one = SPEC.format(matrix="    shard: {range: 2}").replace("py={{ vars.python }} ", "")
    path = tmp_path / "two.yaml"
    path.write_text(one + "---\n" + one.replace("name: ci", "name: cd"), encoding="utf-8")
    with pytest.raises(SpecError, match="only one Run document of a file may have a matrix"):
        load_spec_documents(path)


def _data(matrix: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "ci"},
        "spec": {
            "environment": "debian:12",
            "matrix": matrix,
            "steps": [{"name": "t", "run": "echo {{ vars.n }}"}],
        },
    }


def test_a_mapping_spec_expands_the_same_way() -> None:
    loaded = load_spec(_data({"n": {"range": 2}}))
    assert [i.spec.spec.steps[0].run for i in loaded.instances] == ["echo 0", "echo 1"]
    with pytest.raises(SpecError, match="expands to 65536"):
        load_spec(_data({"a": {"range": 256}, "b": {"range": 256}}))


def test_a_spec_model_expands_into_instances_that_differ_by_name() -> None:
    model = RunSpec.model_validate(_data({"n": [1, 2]}))
    loaded = load_spec(model)
    assert [i.name for i in loaded.instances] == ["ci[n=1]", "ci[n=2]"]


def test_a_spec_without_a_matrix_loads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(SPEC.split("  matrix:")[0] + "  steps: [{name: t, run: 'true'}]\n")
    (document,) = load_spec_documents(path)
    assert document.instances == ()
    assert make_plan(prepare(path), resolve_remote=False).metadata.name == "ci"
