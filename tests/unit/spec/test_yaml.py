"""YAML parsing: 1.2 scalars, locations, duplicate keys, alias bombs, odd input."""

from __future__ import annotations

import pytest

from pyro.spec.yaml import MAX_NODES, YamlProblem, parse_documents


def parse_one(text: str) -> object:
    (document,) = parse_documents(text, "t.yaml")
    return document.data


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("off", "off"),
        ("on", "on"),
        ("yes", "yes"),
        ("no", "no"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("0755", 755),
        ("0o17", 15),
        ("0x1f", 31),
        ("-12", -12),
        ("1:20", "1:20"),
        ("1_000", "1_000"),
        ("2024-01-01", "2024-01-01"),
        ("1.5", 1.5),
        ("~", None),
        ("null", None),
        ("", None),
        ("1.0.0", "1.0.0"),
    ],
)
def test_yaml_12_scalars(scalar: str, value: object) -> None:
    assert parse_one(f"k: {scalar}\n") == {"k": value}


def test_positions_use_json_pointers() -> None:
    text = "a:\n  b: [x, {c: 1}]\n  'd/e~f': 2\n"
    (document,) = parse_documents(text, "t.yaml")
    assert document.positions["/a"] == (1, 1)
    assert document.positions["/a/b"] == (2, 3)
    assert document.positions["/a/b/1"] == (2, 10)
    assert document.positions["/a/b/1/c"] == (2, 11)
    assert document.positions["/a/d~1e~0f"] == (3, 3)
    assert document.locate("/a/b/7/zz") == (2, 3)


def test_duplicate_keys_are_all_reported() -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_documents("a: 1\nb: {x: 1, x: 2}\na: 3\n", "t.yaml")
    found = [(issue.line, issue.pointer) for issue in caught.value.issues]
    assert found == [(2, "/b/x"), (3, "/a")]
    assert "first written at line 1:1" in caught.value.issues[1].message


def test_merge_keys_and_anchors_work() -> None:
    text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n"
    assert parse_one(text) == {"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}}


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    with pytest.raises(YamlProblem) as caught:
        parse_documents("\n".join(lines) + "\n", "t.yaml")
    assert f"more than {MAX_NODES}" in caught.value.issues[0].message


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "k: " + "9" * 5000 + "\n",
        "? [a]\n: b\n",
        "a: !!python/object:os.system x\n",
        "a: *undefined\n",
        "\t- tab\n",
        "a: 'unterminated\n",
        "--- !!set {a, b}\n",
        "a: !!binary AAAA\nb: [1\n",
    ],
    ids=["deep", "long-int", "complex-key", "python-tag", "alias", "tab", "quote", "set", "flow"],
)
def test_odd_input_is_a_yaml_problem(text: str) -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_documents(text, "t.yaml")
    assert caught.value.issues
    assert all(issue.file == "t.yaml" for issue in caught.value.issues)


def test_documents_keep_their_index_and_start() -> None:
    documents = parse_documents("a: 1\n---\nb: 2\n", "t.yaml")
    assert [(d.index, d.start, d.data) for d in documents] == [
        (0, (1, 1), {"a": 1}),
        (1, (3, 1), {"b": 2}),
    ]


@pytest.mark.parametrize(
    "text",
    ["a: !!int abc\n", "a: !!float x\n", "a: !!timestamp 2020-13-45\n", "<<: [1, 2]\n"],
)
def test_bad_explicit_tags_are_yaml_problems(text: str) -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_documents(text, "t.yaml")
    assert caught.value.issues[0].line == 1
