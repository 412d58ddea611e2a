"""The docs-block extractor, its markers and its output matcher catch a stale doc.

The real docs are run by tests/e2e/test_docs_blocks.py; these plant small Markdown files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.docblocks import Block, parse_doc
from helpers.docrun import (
    block_env,
    check_listing,
    output_matches,
    parse_console,
    pyro_bin,
    run_block,
)

ROOT = Path(__file__).parents[2]

PLANTED = """\
# A doc

<!-- docs-test: guest -->
```console
$ pyro run debian:12 -- true
```

- a list item with a block:

  ```sh
  echo in a list
  ```

<!-- docs-test: skip (needs root) -->
<!-- docs-test: setup touch x -->
```bash
sudo true
```

````yaml
```console
$ not a block of its own
```
````

```json
{}
```
"""


def only(text: str) -> Block:
    doc = parse_doc(text, "t.md")
    assert not doc.problems, doc.problems
    (block,) = doc.blocks
    return block


def run(text: str, tmp_path: Path) -> list[str]:
    env = block_env(ROOT, pyro_bin(tmp_path / "bin"), dict(os.environ))
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return run_block(only(text), work, env, timeout=60)


# -- extraction ----------------------------------------------------------------------------------


def test_blocks_lines_languages_and_markers() -> None:
    doc = parse_doc(PLANTED, "t.md")
    got = [(b.line, b.lang, b.runs, [(m.kind, m.arg) for m in b.markers]) for b in doc.blocks]
    assert got == [
        (4, "console", True, [("guest", "")]),
        (10, "sh", True, []),
        (16, "bash", True, [("skip", "needs root"), ("setup", "touch x")]),
        (20, "yaml", False, []),
        (26, "json", False, []),
    ]
    assert doc.blocks[1].content == "echo in a list\n"
    assert doc.problems == ["t.md:16: a skipped block takes no other marker"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- docs-test: skip -->\n```sh\ntrue\n```\n", "t.md:1: 'skip' needs a reason"),
        ("<!-- docs-test: skip () -->\n```sh\ntrue\n```\n", "t.md:1: 'skip' needs a reason"),
        ("<!-- docs-test: skipp (x) -->\n```sh\ntrue\n```\n", "unknown docs-test marker 'skipp'"),
        ("<!-- docs-test: guest -->\n\n```sh\ntrue\n```\n", "t.md:1: a docs-test marker must sit"),
        ("<!-- docs-test: guest -->\n```yaml\na: 1\n```\n", "t.md:2: 'guest' is for"),
        ("<!-- docs-test: file x -->\n```sh\ntrue\n```\n", "t.md:2: 'file' is for listings"),
        ("```\n$ pyro doctor\n```\n", "t.md:1: an untagged block of commands"),
        ("```console\npyro doctor\n```\n", "t.md:1: a console block starts with"),
        ("<!-- docs-test guest -->\n```sh\ntrue\n```\n", "t.md:1: unreadable marker"),
    ],
)
def test_marker_mistakes_are_reported(text: str, problem: str) -> None:
    problems = parse_doc(text, "t.md").problems
    assert any(p.startswith(problem) or problem in p for p in problems), problems


def test_markers_shown_inside_a_code_block_are_content() -> None:
    text = "````markdown\n<!-- docs-test: skip -->\n```sh\nx\n```\n````\n"
    doc = parse_doc(text, "t.md")
    assert doc.problems == []
    assert [(b.lang, b.markers) for b in doc.blocks] == [("markdown", ())]


def test_console_commands_and_their_output() -> None:
    block = only("```console\n$ a \\\n  b\nout 1\n\n$ c\n$ d\nout 2\n\n```\n")
    commands = parse_console(block)
    assert [(c.text, c.expected, c.line) for c in commands] == [
        ("a \\\n  b", ("out 1",), 2),
        ("c", (), 6),
        ("d", ("out 2",), 7),
    ]


# -- the matcher ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "printed", "matches"),
    [
        (["a", "b"], ["a", "b"], True),
        (["b", "a"], ["a", "b"], False),  # the order printed
        (["a"], ["a", "b"], False),  # an unshown line is a difference
        (["a", "b"], ["a"], False),
        (["a", "...", "z"], ["a", "b", "c", "z"], True),
        (["a", "...", "z"], ["a", "z"], True),
        (["...", "z"], ["a", "b"], False),
        (["a", "…"], ["a"], True),
        (["x ... z"], ["x y z"], True),
        (["x ... z"], ["x y"], False),
        (["vm_id=0b4bf12f37fc duration_ms=542"], ["vm_id=a5ab4b63237c duration_ms=9"], True),
        (["sha256:81c57f54b1c3  -"], ["sha256:956dbb507522  -"], True),
        (["took 0.6 s", "(71 ms)"], ["took 12 s", "(3ms)"], True),
        (["git version 2.39.5"], ["git version 2.39.4"], False),
        (["a (b) [c] *"], ["a (b) [c] *  "], True),  # regex characters are literal
        ([], [], True),
        ([], ["anything"], False),
        (["..."], [], True),
    ],
)
def test_output_matches(expected: list[str], printed: list[str], matches: bool) -> None:
    assert output_matches(tuple(expected), printed) is matches


# -- running planted docs ------------------------------------------------------------------------


def test_a_stale_console_block_fails_with_a_diff(tmp_path: Path) -> None:
    problems = run("```console\n$ echo hello\ngoodbye\n```\n", tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("t.md:2: $ echo hello\nthe output differs from the doc:")
    assert "-goodbye" in problems[0] and "+hello" in problems[0]


def test_stdout_and_stderr_are_shown_in_the_order_printed(tmp_path: Path) -> None:
    command = (
        "$ echo out; echo err >&2; python3 -c 'print(1); import sys; print(2, file=sys.stderr)'"
    )
    assert run(f"```console\n{command}\nout\nerr\n1\n2\n```\n", tmp_path / "a") == []
    assert run(f"```console\n{command}\nerr\nout\n1\n2\n```\n", tmp_path / "b") != []


def test_a_current_console_block_passes(tmp_path: Path) -> None:
    text = (
        "```console\n$ x=$(echo 41)\n$ echo $((x + 1)) && echo oops >&2\n42\noops\n"
        "$ cd /\n$ pwd\n/\n```\n"
    )
    assert run(text, tmp_path) == []


def test_a_failing_command_fails_unless_the_doc_shows_its_status(tmp_path: Path) -> None:
    problems = run("```console\n$ false\n$ echo after\nafter\n```\n", tmp_path)
    assert len(problems) == 1 and "t.md:2: $ false\nexited 1" in problems[0]
    assert run("```console\n$ sh -c 'exit 3'\n$ echo $?\n3\n```\n", tmp_path) == []
    assert run("```console\n$ sh -c 'exit 3'\n$ echo $?\n0\n```\n", tmp_path) != []


def test_a_failing_script_fails(tmp_path: Path) -> None:
    problems = run("```sh\ntrue\nfalse   # stops here (bash -e)\necho not reached\n```\n", tmp_path)
    assert len(problems) == 1 and "the script exited 1" in problems[0]
    assert "not reached" not in problems[0]
    assert run("```sh\necho x | grep -q x\n```\n", tmp_path) == []
    assert run("```sh\nfalse | true\n```\n", tmp_path) != []  # pipefail


def test_a_python_block_runs_with_this_checkouts_pyro(tmp_path: Path) -> None:
    ok = f"```python\nimport pyro\nassert pyro.__file__.startswith({str(ROOT)!r})\n```\n"
    assert run(ok, tmp_path / "a") == []
    problems = run("```python\nassert 1 + 1 == 3, 'stale'\n```\n", tmp_path / "b")
    assert len(problems) == 1 and "AssertionError: stale" in problems[0]


def test_setup_runs_first_and_its_failure_is_reported(tmp_path: Path) -> None:
    text = "<!-- docs-test: setup echo hi > f -->\n```console\n$ cat f\nhi\n```\n"
    assert run(text, tmp_path) == []
    failing = "<!-- docs-test: setup echo why; false -->\n```console\n$ true\n```\n"
    assert run(failing, tmp_path / "2") == ["t.md:2: the setup failed\n--- output\nwhy\n"]


def test_a_block_that_ends_the_session_early_is_reported(tmp_path: Path) -> None:
    problems = run("```console\n$ exit 0\n$ echo never\nnever\n```\n", tmp_path)
    assert len(problems) == 1 and "the session ended early" in problems[0]


def test_pyro_on_path_is_this_checkout(tmp_path: Path) -> None:
    from pyro.__about__ import __version__

    stale = "```console\n$ pyro --version\npyro 0.0.0 (catalog 1)\n```\n"
    assert run(stale, tmp_path / "a") != []
    current = f"```console\n$ pyro --version\npyro {__version__} (catalog ...)\n```\n"
    assert run(current, tmp_path / "b") == []
    where = "```console\n$ python3 -c 'import pyro; print(pyro.__file__)'\n...\n```\n"
    assert run(where, tmp_path / "c") == []
    env = block_env(ROOT, pyro_bin(tmp_path / "d"), dict(os.environ))
    printed = subprocess.run(
        ["python3", "-c", "import pyro, sys; print(pyro.__file__, sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed == [str(ROOT / "pyro" / "__init__.py"), sys.prefix]


def test_a_stale_listing_fails(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("a: 1\nb: 2\n")
    current = only("<!-- docs-test: file x.yaml -->\n```yaml\na: 1\nb: 2\n```\n")
    assert check_listing(current, tmp_path) == []
    stale = only("<!-- docs-test: file x.yaml -->\n```yaml\na: 1\n```\n")
    (problem,) = check_listing(stale, tmp_path)
    assert problem.startswith("t.md:2: the listing differs from x.yaml") and "+b: 2" in problem
    missing = only("<!-- docs-test: file y.yaml -->\n```yaml\na: 1\n```\n")
    assert check_listing(missing, tmp_path) == ["t.md:2: lists y.yaml, which does not exist"]
