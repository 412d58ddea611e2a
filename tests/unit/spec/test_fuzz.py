"""Property tests: whatever spec-shaped input arrives, the loader raises SpecError or succeeds.

Examples are derived from the valid fixtures (mutated data, mutated YAML text) and from
random text. ``derandomize=True`` makes every run (and CI) see the same examples.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro.errors import SpecError
from pyro.spec import load_spec_data, load_spec_text
from pyro.spec.load import LoadedSpec
from pyro.spec.yaml import parse_documents

from .specfiles import VALID, sidecar_vars

SETTINGS = settings(
    max_examples=550,  # 4 tests x 550 = 2,200 examples
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _fixture_texts() -> list[str]:
    texts = []
    for path in VALID:
        text = path.read_text(encoding="utf-8")
        if "{{" in text or "{%" in text:
            continue
        texts.append(text)
    return texts


TEXTS = _fixture_texts()
DOCUMENTS: list[dict[str, Any]] = [
    document.data for text in TEXTS for document in parse_documents(text, "fixture")
]
KEYS = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "steps",
    "run",
    "argv",
    "name",
    "env",
    "network",
    "policy",
    "allow",
    "publish",
    "files",
    "source",
    "target",
    "resources",
    "vcpus",
    "memoryMiB",
    "timeoutSeconds",
    "cleanup",
    "version",
    "kernel",
    "rootfs",
    "x",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["off", "debian:12", "/workspace", "../x", "oci://x/y", "{{ vars.a }}", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)


def _containers(node: Any, found: list[Any]) -> list[Any]:
    if isinstance(node, dict | list):
        found.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, found)
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        target = draw(st.sampled_from(_containers(document, [])))
        action = draw(st.sampled_from(["drop", "add", "replace"]))
        if isinstance(target, dict):
            keys = list(target)
            if action == "drop" and keys:
                del target[draw(st.sampled_from(keys))]
            elif action == "replace" and keys:
                target[draw(st.sampled_from(keys))] = draw(values)
            else:
                target[draw(st.sampled_from(KEYS))] = draw(values)
        elif target:
            index = draw(st.integers(min_value=0, max_value=len(target) - 1))
            if action == "drop":
                del target[index]
            else:
                target[index] = draw(values)
    return document


def _loads_or_spec_error(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        result = call(*args, **kwargs)
    except SpecError as error:
        assert error.issues
        assert error.summary
        return
    items = result if isinstance(result, list) else [result]
    assert all(isinstance(item, LoadedSpec) for item in items)


@SETTINGS
@given(document=mutated_documents(), with_vars=st.booleans())
def test_mutated_data_only_raises_spec_error(document: dict[str, Any], with_vars: bool) -> None:
    _loads_or_spec_error(load_spec_data, document, vars={"a": 1} if with_vars else None)


@SETTINGS
@given(document=mutated_documents())
def test_mutated_data_as_yaml_only_raises_spec_error(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    _loads_or_spec_error(load_spec_text, text, name="fuzz.yaml")


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        start = draw(st.integers(min_value=0, max_value=len(text)))
        end = draw(st.integers(min_value=start, max_value=min(len(text), start + 12)))
        insert = draw(
            st.one_of(
                st.text(max_size=6),
                st.sampled_from(["{{", "}}", "{%", "&a", "*a", "---\n", "\t", ":", "- ", "\n  "]),
            )
        )
        text = text[:start] + insert + text[end:]
    return text


@SETTINGS
@given(text=st.one_of(mutated_texts(), st.text(max_size=200)))
def test_mutated_text_only_raises_spec_error(text: str) -> None:
    _loads_or_spec_error(load_spec_text, text, name="fuzz.yaml", vars={"a": "b"})


def test_templated_fixture_with_random_vars() -> None:
    path = next(p for p in VALID if p.name == "templated.yaml")
    base = sidecar_vars(path)
    assert base is not None

    @SETTINGS
    @given(key=st.sampled_from(sorted(base)), value=values)
    def check(key: str, value: Any) -> None:
        _loads_or_spec_error(load_spec_text, path.read_text(), vars={**base, key: value})

    check()
