"""The loader's API: sources, file checks, documents, base folders, vars files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyro.errors import SpecError
from pyro.spec import (
    EnvironmentSpec,
    RunSpec,
    load_spec,
    load_spec_data,
    load_spec_documents,
    load_spec_text,
    load_vars_file,
)
from pyro.spec.load import MAX_SPEC_BYTES

from .specfiles import SPECS

MINIMAL = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: t}
spec:
  environment: debian:12
  steps: [{name: a, run: x}]
"""


def data() -> dict[str, Any]:
    return {
        "apiVersion": "pyro/v1",
        "kind": "Run",
        "metadata": {"name": "t"},
        "spec": {"environment": "debian:12", "steps": [{"name": "a", "run": "x"}]},
    }


def only_issue(error: pytest.ExceptionInfo[SpecError]) -> dict[str, Any]:
    assert len(error.value.issues) == 1, error.value.issues
    return error.value.issues[0].to_dict()


def test_load_spec_from_path_sets_origin(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(MINIMAL)
    loaded = load_spec(path)
    assert isinstance(loaded.spec, RunSpec)
    assert loaded.path == path.resolve()
    assert loaded.base_dir == tmp_path.resolve()
    assert loaded.index == 0
    assert loaded.source_name == str(path)


def test_load_spec_refuses_multi_document_file() -> None:
    path = SPECS / "valid" / "multi-document.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "2 documents" in caught.value.summary
    assert "load_spec_documents" in caught.value.hint
    kinds = [type(item.spec) for item in load_spec_documents(path)]
    assert kinds == [EnvironmentSpec, RunSpec]


def test_load_spec_from_mapping_and_model() -> None:
    loaded = load_spec(data())
    assert loaded.path is None
    assert loaded.base_dir == Path.cwd()
    assert loaded.source_name == "<spec>"
    again = load_spec(loaded.spec)
    assert again.spec is loaded.spec


def test_load_spec_refuses_other_types() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(42)  # type: ignore[arg-type]
    assert "file path, a mapping or a spec model" in caught.value.summary


def test_load_spec_text_with_name_and_base_dir(tmp_path: Path) -> None:
    (loaded,) = load_spec_text(MINIMAL, name="stdin", base_dir=tmp_path)
    assert loaded.base_dir == tmp_path
    assert loaded.source_name == "stdin"
    with pytest.raises(SpecError) as caught:
        load_spec_text(MINIMAL.replace("run: x", "run: 5"), name="stdin")
    issue = only_issue(caught)
    assert (issue["file"], issue["line"], issue["pointer"]) == ("stdin", 6, "/spec/steps/0/run")


def test_load_spec_data_renders_only_with_vars() -> None:
    templated = data()
    templated["spec"]["steps"][0]["run"] = "echo {{ vars.who }}"
    plain = load_spec_data(templated)
    assert isinstance(plain.spec, RunSpec)
    assert plain.spec.spec.steps[0].run == "echo {{ vars.who }}"
    rendered = load_spec_data(templated, vars={"who": "me"})
    assert isinstance(rendered.spec, RunSpec)
    assert rendered.spec.spec.steps[0].run == "echo me"
    with pytest.raises(SpecError) as caught:
        load_spec_data(templated, vars={})
    assert "undefined" in caught.value.summary


def test_load_spec_data_reports_pointer_without_line() -> None:
    bad = data()
    bad["spec"]["timeoutSeconds"] = 0
    with pytest.raises(SpecError) as caught:
        load_spec_data(bad, name="payload")
    issue = only_issue(caught)
    assert issue["pointer"] == "/spec/timeoutSeconds"
    assert issue["line"] is None
    assert issue["file"] == "payload"


def test_load_spec_data_refuses_non_mapping() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_data([1, 2])  # type: ignore[arg-type]
    assert only_issue(caught)["found"] == "list"


def test_all_issues_of_all_documents_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    bad = MINIMAL.replace("run: x", "run: x, timeoutSeconds: 0").replace("name: t", "name: T")
    path.write_text(bad + "---\n" + bad)
    with pytest.raises(SpecError) as caught:
        load_spec_documents(path)
    lines = [(issue.line, issue.pointer) for issue in caught.value.issues]
    assert lines == [
        (3, "/metadata/name"),
        (6, "/spec/steps/0/timeoutSeconds"),
        (10, "/metadata/name"),
        (13, "/spec/steps/0/timeoutSeconds"),
    ]
    assert "(+3 more)" in caught.value.summary


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"apiVersion: pyro/v1\x00\n", "binary"),
        (b"apiVersion: pyro/v1\nkind: \xff\xfe\n", "not valid UTF-8"),
    ],
    ids=["empty", "blank", "binary", "latin1"],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as caught:
        load_spec_documents(path)
    issue = only_issue(caught)
    assert message in issue["message"]
    assert issue["file"] == str(path)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"apiVersion: pyro/v1\nkind: \xff\n")
    with pytest.raises(SpecError) as caught:
        load_spec_documents(path)
    assert only_issue(caught)["line"] == 2


def test_file_larger_than_one_mib(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    padding = "#" + "x" * 1000 + "\n"
    path.write_text(MINIMAL + padding * (MAX_SPEC_BYTES // len(padding) + 1))
    assert path.stat().st_size > MAX_SPEC_BYTES
    with pytest.raises(SpecError) as caught:
        load_spec_documents(path)
    assert "larger than" in only_issue(caught)["message"]
    with pytest.raises(SpecError):
        load_spec_text(path.read_text())


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert isinstance(load_spec(path).spec, RunSpec)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_documents(tmp_path / "nope.yaml")
    assert "no such file" in caught.value.summary
    with pytest.raises(SpecError) as caught:
        load_spec_documents(tmp_path)
    assert "folder" in caught.value.summary


def test_vars_file(tmp_path: Path) -> None:
    path = tmp_path / "vars.yaml"
    path.write_text("policy: off\ncount: 3\nflag: true\n")
    assert load_vars_file(path) == {"policy": "off", "count": 3, "flag": True}
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError):
        load_vars_file(path)
    path.write_text("a: 1\na: 2\n")
    with pytest.raises(SpecError) as caught:
        load_vars_file(path)
    assert "duplicate key" in caught.value.summary
    path.write_text("1: x\n")
    with pytest.raises(SpecError) as caught:
        load_vars_file(path)
    assert "must be strings" in caught.value.summary


def test_error_dict_is_json_shaped() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(MINIMAL.replace("debian:12", "Debian!"))
    document = caught.value.to_dict()
    assert document["type"] == "SpecError"
    assert document["issues"][0]["pointer"] == "/spec/environment"
    assert document["issues"][0]["line"] == 5


def test_yaml_issues_and_validation_issues_of_other_documents_come_together(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mixed.yaml"
    duplicate = MINIMAL.replace("kind: Run\n", "kind: Run\nkind: Run\n")
    invalid = MINIMAL.replace("debian:12", "Debian!")
    path.write_text(invalid + "---\n" + duplicate)
    with pytest.raises(SpecError) as caught:
        load_spec_documents(path)
    found = [(issue.line, issue.pointer) for issue in caught.value.issues]
    assert found == [(5, "/spec/environment"), (10, "/kind")]
