"""What `pyro validate` and `pyro plan` pay at start-up (docs/performance.md): the regular
expressions they would compile for nothing, and the modules validating needs."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyro.spec import yaml as spec_yaml
from pyro.spec.documents import YamlProblem

ROOT = Path(__file__).resolve().parents[3]


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()[-1]


def test_the_precompiled_class_matches_exactly_what_pyyamls_does() -> None:
    # DOTALL changes nothing in a character class; it keeps this compile out of the entry
    # pyro.spec.yaml put in re's cache.
    theirs = re.compile(spec_yaml.YAML_NON_PRINTABLE, re.DOTALL)
    ours = re.compile(spec_yaml.NON_PRINTABLE)
    assert theirs.pattern != ours.pattern
    differ = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if bool(theirs.match(chr(code))) != bool(ours.match(chr(code)))
    ]
    assert differ == []


def test_pyyaml_still_compiles_the_class_the_cache_entry_is_for() -> None:
    # Without pyro: if PyYAML changed its pattern, the entry would never be hit.
    assert _python("import yaml.reader; print(repr(yaml.reader.Reader.NON_PRINTABLE.pattern))") == (
        repr(spec_yaml.YAML_NON_PRINTABLE)
    )


def test_yaml_imported_by_pyro_finds_the_cheap_pattern() -> None:
    code = (
        "import pyro.spec.yaml, yaml.reader; print(repr(yaml.reader.Reader.NON_PRINTABLE.pattern))"
    )
    assert _python(code) == repr(spec_yaml.NON_PRINTABLE)


@pytest.mark.parametrize("char", ["\x07", "\x1b", "\x7f", "\ufffe", "\ud800"])
def test_special_characters_are_still_refused(char: str) -> None:
    with pytest.raises(YamlProblem, match="special characters are not allowed"):
        spec_yaml.parse_documents(f"a: b{char}\n", "x.yaml")
    spec_yaml.parse_documents("a: b\u00a0c \u00e9 \U0001f600\n", "x.yaml")


def test_the_oci_pattern_is_compiled_only_for_an_oci_reference() -> None:
    code = (
        "import re, json\n"
        "compiled = []\n"
        "real = re._compile\n"
        "re._compile = lambda p, f: (compiled.append(p), real(p, f))[1]\n"
        "from pyro.spec import ref\n"
        "ref.parse_environment_ref('debian:12')\n"
        "before = any(p == ref.OCI_PATTERN for p in compiled)\n"
        "parsed = ref.parse_environment_ref('oci://127.0.0.1:5000/pyro/debian:12')\n"
        "print(json.dumps([before, any(p == ref.OCI_PATTERN for p in compiled), parsed.tag]))\n"
    )
    assert json.loads(_python(code)) == [False, True, "12"]


def test_validate_loads_nothing_of_planning() -> None:
    code = (
        "import sys, json\n"
        "sys.argv = ['pyro', 'validate', 'examples/hello.yaml']\n"
        "from pyro.cli.main import main\n"
        "assert main() == 0\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    modules = set(json.loads(_python(code)))
    assert "pyro.spec.model" in modules  # it did validate
    heavy = ("pyro.plan", "pyro.host", "pyro.environments", "pyro.vmm", "subprocess", "difflib")
    assert sorted(m for m in modules if m.startswith(heavy)) == []


def _models_after(argv: list[str]) -> list[str]:
    code = (
        "import sys, json\n"
        f"sys.argv = {['pyro', *argv]!r}\n"
        "from pyro.cli.main import main\n"
        "assert main() == 0\n"
        "from pydantic import BaseModel\n"
        "seen, todo = set(), [BaseModel]\n"
        "while todo:\n"
        "    for sub in todo.pop().__subclasses__():\n"
        "        if sub not in seen:\n"
        "            seen.add(sub)\n"
        "            todo.append(sub)\n"
        "print(json.dumps(sorted(c.__name__ for c in seen if c.__module__.startswith('pyro.'))))\n"
    )
    return list(json.loads(_python(code)))


def test_validating_a_run_document_defines_no_environment_model() -> None:
    # A Run document only names its environment: the Environment document's models are
    # defined when one is read (docs/performance.md).
    models = _models_after(["validate", "examples/hello.yaml"])
    assert "RunSpecBody" in models  # it did validate
    environment = {"EnvironmentSpec", "EnvironmentSpecBody", "KernelSpec", "RootfsSpec"}
    assert sorted(environment & set(models)) == []


def test_validating_an_environment_document_defines_its_models() -> None:
    models = _models_after(["validate", "pyro/data/environments/debian-12.yaml"])
    assert {"EnvironmentSpec", "EnvironmentSpecBody", "KernelSpec"} <= set(models)


@pytest.mark.parametrize(
    "module",
    ["pyro.spec.model", "pyro.spec.environment", "pyro.plan.model", "pyro.plan.inventory"],
)
def test_model_fields_are_not_annotated_with_strings(module: str) -> None:
    # pydantic compiles and evaluates a string annotation while it builds the class
    # (docs/performance.md): these modules do without `from __future__ import annotations`.
    from pydantic import BaseModel

    models = [
        value
        for value in vars(importlib.import_module(module)).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module
    ]
    assert models
    stringly = [
        f"{model.__name__}.{name}"
        for model in models
        for name, annotation in vars(model).get("__annotations__", {}).items()
        if isinstance(annotation, str)
    ]
    assert stringly == []
