"""Generated JSON Schemas: draft-07 for editors, no drift, stable ids, docs current, every
property described, and agreement with pydantic (through jsonschema's Draft7Validator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from jsonschema import Draft7Validator, Draft202012Validator

from pyro.errors import SpecError
from pyro.spec import load_spec_data, render_template
from pyro.spec.schema import SCHEMAS, build_schema
from pyro.spec.schema.docs import render_docs
from pyro.spec.schema.draft07 import to_draft07
from pyro.spec.schema.files import DOCS_PATH, SCHEMA_DIR, drifted_schemas, main
from pyro.spec.yaml import YamlProblem, parse_documents

from .specfiles import INVALID, VALID, sidecar_vars
from .test_fuzz import mutated_documents

# Rules pydantic enforces that JSON Schema cannot express. Keep this list tiny, with reasons.
SCHEMA_CANNOT_EXPRESS = {
    "duplicate-step-name.yaml": "uniqueness of one key across list items (step names)",
    "duplicate-publish-port.yaml": "uniqueness of one key across list items (host ports)",
}


def load_schema(filename: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8"))
    return loaded


def validators() -> dict[str, Draft7Validator]:
    """Draft-07 validators of the checked-in files, the dialect yaml-language-server implements."""
    by_kind = {}
    for filename, model in SCHEMAS.items():
        schema = load_schema(filename)
        Draft7Validator.check_schema(schema)
        kind = model.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]
        by_kind[kind] = Draft7Validator(schema)
    return by_kind


VALIDATORS = validators()


def schema_accepts(data: dict[str, Any]) -> bool:
    kind = data.get("kind")
    validator = VALIDATORS.get(kind) if isinstance(kind, str) else None
    if validator is None:  # an unknown kind: no schema accepts it
        return False
    return bool(validator.is_valid(data))


def pydantic_accepts(data: dict[str, Any]) -> bool:
    try:
        load_spec_data(data)
    except SpecError:
        return False
    return True


def documents(path: Path) -> list[dict[str, Any]] | None:
    """The documents of a fixture as data, or None when it fails before validation."""
    try:
        text = render_template(path.read_text(encoding="utf-8"), sidecar_vars(path), path.name)
        return [document.data for document in parse_documents(text, path.name)]
    except (SpecError, YamlProblem):
        return None


def test_checked_in_schemas_match_the_models() -> None:
    assert drifted_schemas() == [], "run 'make schemas' (python -m pyro.spec.schema --write)"


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_schema_header_and_format(filename: str) -> None:
    text = (SCHEMA_DIR / filename).read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["$id"] == f"https://pyro.dev/schemas/v1/{filename}"
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert text.endswith("}\n")
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# The keywords of draft-07 (and the annotations yaml-language-server reads), from the
# meta-schema itself: anything else in a schema would be ignored by an editor.
DRAFT_07_KEYWORDS = {*Draft7Validator.META_SCHEMA["properties"], "$schema", "$id", "$ref"}


def _nodes(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every (sub)schema of ``node`` with its JSON pointer, data keywords not entered."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_nodes(item, f"{where}/{index}"))
    elif isinstance(node, dict):
        found.append((where, node))
        for key, value in node.items():
            if key in ("default", "examples", "const", "enum", "required"):
                continue
            if key in ("properties", "patternProperties", "definitions"):
                for name, item in value.items():
                    found.extend(_nodes(item, f"{where}/{key}/{name}"))
            else:
                found.extend(_nodes(value, f"{where}/{key}"))
    return found


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_schema_is_plain_draft07(filename: str) -> None:
    schema = load_schema(filename)
    Draft7Validator.check_schema(schema)
    assert "$defs" not in schema
    for where, node in _nodes(schema):
        assert set(node) <= DRAFT_07_KEYWORDS, (where, set(node) - DRAFT_07_KEYWORDS)
        if "$ref" in node:
            # draft-07 ignores every keyword beside $ref: a description there would be lost.
            assert set(node) == {"$ref"}, where
            name = node["$ref"].removeprefix("#/definitions/")
            assert name in schema["definitions"], where


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_every_property_has_a_description(filename: str) -> None:
    schema = load_schema(filename)
    objects = [(w, n) for w, n in _nodes(schema) if n.get("type") == "object"]
    assert len(objects) >= 5
    undescribed = [
        f"{where}/properties/{name}"
        for where, node in objects
        for name, prop in node.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == []


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_examples_are_valid_values(filename: str) -> None:
    schema = load_schema(filename)
    examples = [(w, n) for w, n in _nodes(schema) if "examples" in n]
    assert len(examples) >= 6
    for where, node in examples:
        standalone = {"definitions": schema["definitions"], **node}
        for example in node["examples"]:
            errors = [e.message for e in Draft7Validator(standalone).iter_errors(example)]
            assert errors == [], (where, example)


def test_draft07_conversion_refuses_what_draft07_lacks() -> None:
    with pytest.raises(ValueError, match="#/properties/pair: draft-07 has no 'prefixItems'"):
        to_draft07({"properties": {"pair": {"type": "array", "prefixItems": [{}, {}]}}})
    converted = to_draft07(
        {
            "$defs": {"A": {"type": "string"}},
            "properties": {"a": {"$ref": "#/$defs/A", "default": "x"}},
        }
    )
    assert converted == {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"A": {"type": "string"}},
        "properties": {"a": {"allOf": [{"$ref": "#/definitions/A"}], "default": "x"}},
    }


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_the_mcp_form_stays_2020_12(filename: str) -> None:
    schema = build_schema(SCHEMAS[filename], filename)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_schemas_folder_is_reachable_from_the_repository_root() -> None:
    root_link = Path(__file__).resolve().parents[3] / "schemas"
    assert (root_link / "run.schema.json").read_text() == (
        SCHEMA_DIR / "run.schema.json"
    ).read_text()


def test_docs_are_current() -> None:
    assert DOCS_PATH.read_text(encoding="utf-8") == render_docs(), (
        "run 'python -m pyro.spec.schema --docs'"
    )


def test_schema_tool_write_and_check(tmp_path: Path) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--write", "--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "run.schema.json").write_text("{}\n")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    docs = tmp_path / "specs.md"
    assert main(["--docs", "--docs-path", str(docs)]) == 0
    assert docs.read_text() == render_docs()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_schema_accepts_every_valid_fixture(path: Path) -> None:
    found = documents(path)
    assert found
    for data in found:
        errors = [e.message for e in VALIDATORS[data["kind"]].iter_errors(data)]
        assert not errors, errors


# Fixtures that fail in the YAML or template stage have no data to compare.
COMPARABLE = [path for path in INVALID if documents(path) is not None]


def test_most_invalid_fixtures_are_comparable() -> None:
    assert len(COMPARABLE) >= 40


@pytest.mark.parametrize("path", COMPARABLE, ids=lambda p: p.name)
def test_schema_and_pydantic_agree_on_invalid_fixture(path: Path) -> None:
    found = documents(path)
    assert found is not None
    verdicts = [(schema_accepts(data), pydantic_accepts(data)) for data in found]
    assert not all(model for _, model in verdicts), "fixture should be invalid"
    if path.name in SCHEMA_CANNOT_EXPRESS:
        assert all(schema for schema, _ in verdicts), "exception no longer needed"
        return
    assert [schema for schema, _ in verdicts] == [model for _, model in verdicts]


def _known_exception(data: Any) -> bool:
    """Documents where disagreement is expected, for the reasons in SCHEMA_CANNOT_EXPRESS."""
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return False
    steps = spec.get("steps")
    names = [s.get("name") for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
    network = spec.get("network")
    publish = network.get("publish") if isinstance(network, dict) else None
    hosts = (
        [p.get("host") for p in publish if isinstance(p, dict)] if isinstance(publish, list) else []
    )
    return len(names) != len(set(map(repr, names))) or len(hosts) != len(set(map(repr, hosts)))


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(document=mutated_documents())
def test_schema_and_pydantic_agree_on_mutated_documents(document: dict[str, Any]) -> None:
    if _known_exception(document):
        return
    assert schema_accepts(document) == pydantic_accepts(document)
