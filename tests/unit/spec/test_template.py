"""Jinja2 rendering: sandboxed, strict, located errors, lazy import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyro.errors import SpecError
from pyro.spec import render_template


def test_renders_vars_and_keeps_modeline() -> None:
    text = "# yaml-language-server: $schema=../schemas/run.schema.json\nname: {{ vars.n }}\n"
    assert render_template(text, {"n": "x"}, "t.yaml") == text.replace("{{ vars.n }}", "x")


def test_text_without_markers_is_returned_as_is() -> None:
    text = "a: '{ not a template }'\n"
    assert render_template(text, None, "t.yaml") is text


def test_undefined_variable_names_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        render_template("a: 1\nb: 2\nc: {{ vars.missing }}\n", {}, "t.yaml")
    (issue,) = caught.value.issues
    assert (issue.file, issue.line) == ("t.yaml", 3)
    assert "missing" in issue.message
    assert "--var" in caught.value.hint


def test_undefined_inside_a_loop_names_the_line() -> None:
    text = "a:\n{% for x in vars.entries %}\n  - {{ x.nope }}\n{% endfor %}\n"
    with pytest.raises(SpecError) as caught:
        render_template(text, {"entries": [{"ok": 1}]}, "t.yaml")
    assert caught.value.issues[0].line == 3


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        render_template("a: 1\nb: {{ vars.x \n", {"x": 1}, "t.yaml")
    assert caught.value.issues[0].line == 2
    assert "syntax error" in caught.value.summary


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__[1].__subclasses__()",
        "vars.__class__",
        "'x' * 100000000",
        "[1] * 100000000",
        "10 ** 100000",
        "1 / 0",
    ],
)
def test_unsafe_or_huge_expressions_are_spec_errors(expression: str) -> None:
    with pytest.raises(SpecError) as caught:
        render_template(f"a: 1\nb: {{{{ {expression} }}}}\n", {}, "t.yaml")
    assert caught.value.issues[0].line == 2


def test_plain_spec_does_not_import_jinja() -> None:
    code = (
        "import sys\n"
        "from pyro.spec import load_spec\n"
        "load_spec('examples/hello.yaml')\n"
        "assert 'jinja2' not in sys.modules, 'jinja2 was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{% for j in range(100) %}xxxxxxxxxxxx{% endfor %}{% endfor %}",
        "{{ lipsum(100000) }}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{{ range(10000000) | list }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '%999999999d' | format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ 'x' | center(1000000000) }}",
        "{{ 'x' | indent(1000000000, true) }}",
    ],
    ids=[
        "nested-loops",
        "lipsum",
        "recursion",
        "range",
        "ljust",
        "percent",
        "format-filter",
        "str-format",
        "center",
        "indent",
    ],
)
def test_runaway_templates_are_spec_errors(template: str) -> None:
    with pytest.raises(SpecError) as caught:
        render_template(f"a: {template}\n", {}, "t.yaml")
    assert caught.value.issues[0].file == "t.yaml"


def test_ordinary_filters_and_formatting_still_work() -> None:
    text = "a: {{ vars.x | default('d') | upper }} {{ [1, 2] | join(',') }} {{ '%5d' % 3 }}\n"
    assert render_template(text, {}, "t.yaml") == "a: D 1,2     3\n"
    assert render_template("{{ '{} {x}'.format(1, x=2) }}", {}, "t") == "1 2"
    assert render_template("{{ 5000000 | string }}", {}, "t") == "5000000"


def test_shell_length_syntax_is_not_a_jinja_comment() -> None:
    text = 'run: "n=${#items[@]}; echo {{ vars.x }}"\n'
    assert render_template(text, {"x": 1}, "t") == 'run: "n=${#items[@]}; echo 1"\n'
