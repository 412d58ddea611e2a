"""Input bombs (issue #17 item 5): every spec parser and renderer stops at a bound with a
clear SpecError, in bounded memory, never a crash.

The bombs that ran for hours or ate gigabytes on the old code run in a ``pyro`` subprocess
limited to 1 GiB of address space (``RLIMIT_AS``), with a generous timeout only as a hang
guard; the smaller cases run in-process.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pyro.errors import SpecError
from pyro.spec import load_spec_data, render_template
from pyro.spec import template as template_module
from pyro.spec import yaml as yaml_module
from pyro.spec.yaml import YamlProblem, parse_documents

# getattr: these tests also run against the old code, which had none of these bounds.
MAX_DEPTH = getattr(yaml_module, "MAX_DEPTH", 64)
MAX_KEY_CHARS = getattr(yaml_module, "MAX_KEY_CHARS", 1024)
MAX_EXPANDED_CHARS = getattr(yaml_module, "MAX_EXPANDED_CHARS", 16 * 1024 * 1024)

pytestmark = pytest.mark.hostile

ROOT = Path(__file__).parents[3]
MEMORY_LIMIT = 1 << 30
HANG_GUARD_S = 120

HEADER = "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: bomb}\n"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _pyro(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYRO_STATE_DIR": str(tmp_path / "state"),
        "PYRO_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
    }
    return subprocess.run(
        [sys.executable, "-m", "pyro.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        preexec_fn=_limit_memory,
        check=False,
    )


def _assert_clean_spec_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "internal error" not in output, output[-2000:]
    assert result.returncode == 1, output[-2000:]
    assert expected in output, output[-2000:]


def yaml_key_bomb() -> str:
    """The issue's bomb: 0.9 MB, a 300 KB key aliased as the key of 120 nested mappings."""
    key = "k" * 300_000
    lines = [HEADER.rstrip("\n"), f"x-key: &k {key}", f"x-pad1: {'p' * 300_000}"]
    lines.append(f"x-pad2: {'q' * 300_000}")
    lines.append("spec:")
    for depth in range(120):
        lines.append("  " * (depth + 1) + "*k :")
    lines[-1] += " end"
    return "\n".join(lines) + "\n"


def test_yaml_aliased_long_key_nested_deep_is_a_clean_error(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(yaml_key_bomb())
    assert 850_000 < bomb.stat().st_size < 1_000_000
    for command in ("plan", "validate"):
        result = _pyro(tmp_path, command, str(bomb))
        _assert_clean_spec_error(result, f"longer than {MAX_KEY_CHARS} characters")
        assert "bomb.yaml:" in result.stdout + result.stderr


def test_yaml_key_bomb_in_a_vars_file_is_a_clean_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + "spec:\n  steps: [{run: 'echo {{ vars.x }}'}]\n")
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_text(yaml_key_bomb().replace(HEADER, "x: 1\n"))
    result = _pyro(tmp_path, "plan", str(spec), "--vars-file", str(vars_file))
    _assert_clean_spec_error(result, f"longer than {MAX_KEY_CHARS} characters")


TEMPLATE_BOMBS = {
    # The issue's: doubling a string with + on one line (256 MB on the old code).
    "plus-doubling": "{% set s = 'x' %}" + "{% set s = s + s %}" * 28 + "{{ s | length }}",
    "tilde-doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(28) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"
    ),
    # The issue's: nested range loops (hours on the old code).
    "nested-range": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "shared-list-doubling": "{% set l = [1] %}" + "{% set l = [l, l] %}" * 40 + "{{ l }}",
    "exponential-macro": (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(40) }}"
    ),
    "many-big-values": "".join(f"{{% set a{i} = 'x' * 1000000 ~ '{i}' %}}" for i in range(200)),
    "append-in-loop": (
        "{% set l = [] %}{% set s = 'x' * 1000000 %}"
        "{% for i in range(100000) %}{{ l.append(s) }}{% endfor %}{{ l | length }}"
    ),
    "join-separator": "{% set s = 'x' * 1000000 %}{{ s.join(range(100000) | map('string')) }}",
}


@pytest.mark.parametrize("template", TEMPLATE_BOMBS.values(), ids=TEMPLATE_BOMBS.keys())
def test_template_bombs_are_clean_errors_through_the_cli(tmp_path: Path, template: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + f"spec:\n  steps: [{{run: 'echo {template}'}}]\n")
    result = _pyro(tmp_path, "plan", str(spec))
    _assert_clean_spec_error(result, "template rendering stopped")
    assert "spec.yaml:5" in result.stdout + result.stderr


# In-process: each case is small enough for the old code to finish (and be wrong) quickly.


def test_yaml_nesting_deeper_than_the_bound_is_refused() -> None:
    text = "".join("  " * level + f"k{level}:\n" for level in range(MAX_DEPTH + 1))
    with pytest.raises(YamlProblem) as caught:
        parse_documents(text + "  " * (MAX_DEPTH + 1) + "leaf: 1\n", "t.yaml")
    (issue,) = caught.value.issues
    assert f"deeper than {MAX_DEPTH} levels" in issue.message
    assert issue.line is not None and issue.pointer.startswith("/k0/k1/")


def test_yaml_key_longer_than_the_bound_is_refused() -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_documents(f"a:\n  ? {'k' * (MAX_KEY_CHARS + 1)}\n  : 1\n", "t.yaml")
    (issue,) = caught.value.issues
    assert f"longer than {MAX_KEY_CHARS}" in issue.message
    assert (issue.line, issue.column, issue.pointer) == (2, 5, "/a")


def test_yaml_aliases_expanding_to_too_much_text_are_refused() -> None:
    # 20 000 aliases of a 1000-character value: few nodes, 20 MB once expanded.
    text = f"a: &v {'v' * 1000}\nb: [{', '.join(['*v'] * 20_000)}]\n"
    with pytest.raises(YamlProblem) as caught:
        parse_documents(text, "t.yaml")
    assert f"more than {MAX_EXPANDED_CHARS} characters" in caught.value.issues[0].message


def test_the_bounds_hold_for_a_whole_file_of_documents() -> None:
    document = "a: &v [x, x, x, x, x, x, x, x, x, x]\nb: [" + ", ".join(["*v"] * 4000) + "]\n"
    with pytest.raises(YamlProblem) as caught:
        parse_documents("---\n".join([document] * 3), "t.yaml")  # 44 000 values each
    (issue,) = caught.value.issues
    assert issue.message.startswith("document 3 brings the file to more than 100000 values")
    with pytest.raises(YamlProblem) as caught:
        parse_documents("a: 1\n---\n" * 1001, "t.yaml")
    (issue,) = caught.value.issues
    assert "more than 1000 documents" in issue.message and issue.line == 2001


def test_positions_of_long_keys_nested_deep_stay_small_and_correct() -> None:
    # Just inside the bounds: 1000-character aliased keys, 50 deep. A flat pointer map would
    # hold 50 * 51 / 2 * 1000 characters of pointers per branch; the tree holds each once.
    key = "k" * 1000
    lines = [f"x: &k {key}", "root:"]
    lines += ["  " * (depth + 1) + "*k :" for depth in range(50)]
    lines[-1] += " leaf"
    (document,) = parse_documents("\n".join(lines) + "\n", "t.yaml")
    deepest = "/root" + f"/{key}" * 50
    assert document.positions[deepest] == (1, 4)  # the anchored key's text
    assert document.locate(deepest + "/missing") == (1, 4)
    assert document.locate("/root/nope") == (2, 1)
    assert document.locate("/nope") == (1, 1)


def test_many_duplicate_keys_are_listed_up_to_a_bound() -> None:
    body = "".join(f"  k: {index}\n" for index in range(500))
    with pytest.raises(YamlProblem) as caught:
        parse_documents("a:\n" + body, "t.yaml")
    issues = caught.value.issues
    assert len(issues) == 101
    assert "399 more problems" in issues[-1].message


@pytest.mark.parametrize(
    "template",
    [
        "{% set s = 'x' * 600000 %}{{ (s + s) | length }}",
        "{% set s = 'x' * 600000 %}{{ (s ~ s) | length }}",
        "{% set s = 'x' * 1100 %}{{ s.replace('x', s) | length }}",
        "{% set s = 'x' * 1100 %}{{ s | replace('x', s) | length }}",
        "{% set s = 'x' * 1000 %}{{ ('{0}' * 2000).format(s) | length }}",
        "{% set s = 'x' * 1000 %}{{ (('%s' * 2000) % ((s,) * 2000)) | length }}",
        "{% set s = 'x' * 1000 %}{{ s.join(range(2000) | map('string')) | length }}",
        "{% set s = 'x' * 1000 %}{{ range(2000) | join(s) | length }}",
        "{{ ('\t' * 2000).expandtabs(1000) | length }}",
        "{{ ('\\n' * 2000) | indent(1000) | length }}",
        "{% set l = [1] %}" + "{% set l = [l, l] %}" * 20 + "{{ l | length }}",
        "{% set l = [] %}{% for i in range(2000) %}{{ l.append('x' * 1000) }}{% endfor %}",
        "{% set n = 3 %}{{ ((n ** 64) ** 64) ** 64 > 0 }}",
    ],
    ids=[
        "plus",
        "tilde",
        "replace",
        "replace-filter",
        "format",
        "percent",
        "join",
        "join-filter",
        "expandtabs",
        "indent",
        "shared-list",
        "append",
        "big-int",
    ],
)
def test_values_that_pass_the_size_bound_are_refused(template: str) -> None:
    with pytest.raises(SpecError) as caught:
        render_template(f"a: 1\nb: {template}\n", {}, "t.yaml")
    (issue,) = caught.value.issues
    assert "template rendering stopped" in issue.message
    assert (issue.file, issue.line) == ("t.yaml", 2)
    assert "at most" in (caught.value.hint or "")


def test_loops_that_pass_the_step_bound_are_refused() -> None:
    template = "{% for a in range(2000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    with pytest.raises(SpecError) as caught:
        render_template(f"a: 1\nb: {template}\n", {}, "t.yaml")
    assert "more than 1000000 steps" in caught.value.issues[0].message


def test_a_render_that_passes_its_time_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_module, "MAX_RENDER_SECONDS", -1.0)
    with pytest.raises(SpecError) as caught:
        render_template("{% for a in range(10) %}{{ a }}{% endfor %}", {}, "t.yaml")
    assert "rendering took longer than" in caught.value.issues[0].message


def test_strings_of_one_spec_given_as_data_share_one_budget() -> None:
    loop = "{% for a in range(400) %}{% for b in range(1000) %}{% endfor %}{% endfor %}x"
    data = {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "t"},
        "spec": {"steps": [{"run": loop}, {"run": loop}, {"run": loop}]},
    }
    with pytest.raises(SpecError) as caught:
        load_spec_data(data, vars={})
    assert "more than 1000000 steps" in caught.value.issues[0].message


def test_ordinary_templates_still_render() -> None:
    text = (
        "{% set ns = namespace(items=[]) %}"
        "{% for x in vars.xs %}{% set ns.items = ns.items + [x ~ '!'] %}{% endfor %}"
        "{{ ns.items | join(',') }} {{ vars.xs | map('upper') | list }} {{ {'a': [1, 2]} }}"
        " {{ 'a-b'.replace('-', '+') }} {{ 'x' * 3 }} {{ 2 ** 10 }} {{ '%s=%d' % ('n', 2) }}"
        "{% for x in [[1, [2]]] recursive %}{{ x if x is number else loop(x) }}{% endfor %}"
        "{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m('q') }}{% filter upper %}f{% endfilter %}"
        "{% set l = [] %}{{ l.append(1) or l }}{% for a, b in [(1, 2)] %}{{ a + b }}{% endfor %}"
    )
    assert render_template(text, {"xs": ["a", "b"]}, "t") == (
        "a!,b! ['A', 'B'] {'a': [1, 2]} a+b xxx 1024 n=212<q>F[1]3"
    )
