"""An undefined template variable is reported with the file's other problems, not instead."""

from __future__ import annotations

import pytest

from pyro.errors import SpecError
from pyro.spec import load_spec_data, load_spec_text
from pyro.spec.template import UNDEFINED_HINT
from pyro.spec.undefined import MAX_REPORTED, render_collecting

UNDEFINED = "template variable is undefined: 'dict object' has no attribute"

SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: "{{ vars.name }}"}
spec:
  environment: debian:12
  timeoutSecs: 5
  resources: {vcpus: {{ vars.cpus }}}
  steps:
{% for t in vars.targets %}
    - name: build-{{ t }}
      run: make {{ t }}
{% endfor %}
    - {name: a, run: "true", cwd: relative}
"""


def failure(text: str, **vars: object) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, name="t.yaml", vars=vars)
    return caught.value


def test_undefined_variables_come_with_every_other_problem() -> None:
    error = failure(SPEC)
    assert [issue.render() for issue in error.issues] == [
        f"t.yaml:3: /: {UNDEFINED} 'name' (found 'metadata: {{name: \"{{{{ vars.name }}}}\"}}')",
        "t.yaml:6:3: /spec/timeoutSecs: unknown key 'timeoutSecs'; did you mean "
        "'timeoutSeconds'? (expected one of the keys environment, backend, resources, "
        "timeoutSeconds, network, env, files, steps, artifacts, cleanup, matrix, retries)",
        f"t.yaml:7: /: {UNDEFINED} 'cpus' (found 'resources: {{vcpus: {{{{ vars.cpus }}}}}}')",
        f"t.yaml:9: /: {UNDEFINED} 'targets' (found '{{% for t in vars.targets %}}')",
        "t.yaml:13:30: /spec/steps/1/cwd: cwd must be an absolute guest path (start with '/') "
        "(found 'relative')",
    ]
    assert error.hint == UNDEFINED_HINT


def test_the_same_file_with_its_variables_has_only_its_own_problems() -> None:
    error = failure(SPEC, name="ok", cpus=2, targets=["lib", "app"])
    assert [issue.pointer for issue in error.issues] == ["/spec/timeoutSecs", "/spec/steps/2/cwd"]
    assert error.hint != UNDEFINED_HINT


def test_problems_caused_by_the_missing_value_are_left_out() -> None:
    """The placeholder makes vcpus a string and the step name 'build-undefined': neither is
    reported, since both lines use the undefined variable."""
    text = SPEC.replace("timeoutSecs", "timeoutSeconds").replace("cwd: relative", "cwd: /w")
    error = failure(text)
    assert [(issue.line, issue.message.rsplit(" ", 1)[-1]) for issue in error.issues] == [
        (3, "'name'"),
        (7, "'cpus'"),
        (9, "'targets'"),
    ]


def test_a_file_with_only_an_undefined_variable_reports_just_that() -> None:
    text = "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: a}\nspec:\n"
    text += "  environment: '{{ vars.env }}'\n  steps: [{name: a, run: 'true'}]\n"
    (issue,) = failure(text).issues
    assert (issue.line, issue.message) == (5, f"{UNDEFINED} 'env'")


def test_each_variable_is_reported_once_at_its_first_use() -> None:
    rendered = render_collecting("a: {{ vars.x }}\nb: {{ vars.x }}-{{ vars.y }}\n", {}, "t")
    assert rendered.text == "a: undefined\nb: undefined-undefined\n"
    assert [(i.line, i.message) for i in rendered.issues] == [
        (1, f"{UNDEFINED} 'x'"),
        (2, f"{UNDEFINED} 'y'"),
    ]
    assert rendered.lines == {1, 2}


def test_other_template_errors_still_stop_the_render() -> None:
    with pytest.raises(SpecError) as caught:
        render_collecting("a: {{ vars.x }}\nb: {{ 1 +\n", {}, "t")
    assert caught.value.issues[0].message.startswith("template syntax error")


def test_data_input_reports_the_pointer_of_each_undefined_string() -> None:
    data = {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "a"},
        "spec": {
            "environment": "{{ vars.env }}",
            "timeoutSeconds": 0,
            "steps": [{"name": "a", "run": "echo {{ vars.msg }}"}],
        },
    }
    with pytest.raises(SpecError) as caught:
        load_spec_data(data, name="payload", vars={})
    assert [(i.pointer, i.line, i.message) for i in caught.value.issues] == [
        ("/spec/environment", None, f"{UNDEFINED} 'env'"),
        ("/spec/steps/0/run", None, f"{UNDEFINED} 'msg'"),
        ("/spec/timeoutSeconds", None, "value out of range"),
    ]
    assert caught.value.hint == UNDEFINED_HINT


def test_a_loop_naming_many_undefined_variables_reports_a_bounded_number() -> None:
    text = "a: [{% for i in range(1000) %}{{ vars['v%d' % i] }},{% endfor %}]\n"
    rendered = render_collecting(text, {}, "t")
    assert len(rendered.issues) == MAX_REPORTED
    assert rendered.issues[0].message == f"{UNDEFINED} 'v0'"
    assert rendered.lines == {1}
