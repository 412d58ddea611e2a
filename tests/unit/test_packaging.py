"""Packaging metadata: what the wheel must carry and how the runtime finds it.

The archive-level checks (build, twine, install into a fresh venv, smoke outside the
checkout) are ``make dist-check``; these are the fast static halves of the same promises.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

import pyro
from pyro.__about__ import CATALOG_VERSION, __version__
from pyro.environments.catalog import catalog, catalog_dir
from pyro.guest import build as agent_build

REPO = Path(__file__).resolve().parents[2]
# The md5 of the Apache License 2.0 as apache.org publishes it (LICENSE-2.0.txt).
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Modules allowed to use ``__file__``, and why that is safe in an installed wheel.
SOURCE_RELATIVE_ALLOWED = {
    # Developer tool (``python -m pyro.spec.schema --write/--docs``) that regenerates
    # checked-in files; never run by a user.
    "pyro/spec/schema/files.py": "developer tool",
    # Hands QEMU its sibling module relay.py to run as a script: a .py file of the package
    # itself, installed next to slirp.py (a wheel is never imported from a zip).
    "pyro/net/slirp.py": "sibling module run as a script",
    # Starts its sibling module console.py as a script (the serial console keeper), the
    # same way.
    "pyro/vmm/launch.py": "sibling module run as a script",
}


def test_version_is_single_sourced() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "pyro.__about__.__version__"}
    assert pyro.__version__ == __version__


def test_version_flag_prints_package_and_catalog_version() -> None:
    code = "import sys; from pyro.cli.main import main; sys.argv[1:] = ['--version']; main()"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pyro {__version__} (catalog {CATALOG_VERSION})"


def _package_data_globs() -> set[Path]:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["pyro"]
    package = REPO / "pyro"
    return {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}


@pytest.mark.parametrize("folder", ["pyro/data", "pyro/guest/agent"])
def test_package_data_patterns_cover_every_data_file(folder: str) -> None:
    covered = _package_data_globs()
    files = [
        p
        for p in (REPO / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    assert files, f"{folder} is empty"
    missing = [str(p.relative_to(REPO)) for p in files if p not in covered]
    assert missing == []


def test_runtime_resources_resolve_through_importlib() -> None:
    data = resources.files("pyro.data")
    assert data.joinpath("examples/hello.yaml").is_file()
    for schema in ("run.schema.json", "environment.schema.json"):
        assert (data / "schemas" / schema).is_file()
    specs = sorted(p.name for p in catalog_dir().glob("*.yaml"))
    assert "debian-12.yaml" in specs
    for entry in catalog().values():
        assert (entry.spec_dir / entry.spec.spec.kernel.fragment).is_file(), entry.name
    sources = [name for name, _ in agent_build._sources()]
    assert "main.c" in sources and "agent.h" in sources


def _uses_dunder_file(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.Name) and node.id == "__file__" for node in ast.walk(tree))


def test_runtime_code_never_locates_files_relative_to_the_source_tree() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "pyro").rglob("*.py"))
        if _uses_dunder_file(p) and str(p.relative_to(REPO)) not in SOURCE_RELATIVE_ALLOWED
    ]
    assert offenders == [], "read package data through importlib.resources instead"


def test_sdist_leaves_out_every_symlink_it_would_graft() -> None:
    manifest = (REPO / "MANIFEST.in").read_text().splitlines()
    grafted = [line.split()[1] for line in manifest if line.startswith("graft ")]
    excluded = {line.split()[1] for line in manifest if line.startswith(("exclude ", "prune "))}
    links = [
        os.path.relpath(os.path.join(d, n), REPO)
        for folder in grafted
        for d, dirs, files in os.walk(REPO / folder)
        for n in dirs + files
        if os.path.islink(os.path.join(d, n))
    ]
    assert [link for link in links if link not in excluded] == []


def test_ci_runs_the_test_command_then_dist_check() -> None:
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make")
    ]
    assert commands == ["make test", "make dist-check"]
    assert "\ndist-check:" in (REPO / "Makefile").read_text()


def test_dist_check_audit_hook_records_only_checkout_paths(tmp_path: Path) -> None:
    from scripts.dist_check import SITECUSTOMIZE

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    forbidden = tmp_path / "checkout"
    forbidden.mkdir()
    (forbidden / "inside.txt").write_text("x")
    (tmp_path / "outside.txt").write_text("y")
    log = tmp_path / "audit.log"
    code = (
        "import os, subprocess, sys; open(sys.argv[1]).read(); open(sys.argv[2]).read(); "
        "os.listdir(sys.argv[3]); subprocess.run(['true'], cwd=sys.argv[3], check=True)"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "PYRO_DIST_FORBID": str(forbidden),
        "PYRO_DIST_AUDIT_LOG": str(log),
    }
    args = [str(forbidden / "inside.txt"), str(tmp_path / "outside.txt"), str(forbidden)]
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, timeout=60)

    events = [line.split(" ", 2)[1:] for line in log.read_text().splitlines()]
    assert ["open", str(forbidden / "inside.txt")] in events
    assert ["os.listdir", str(forbidden)] in events
    assert ["subprocess.Popen", str(forbidden)] in events
    assert all(not path.endswith("outside.txt") for _, path in events)


def test_dist_check_strace_hits_name_checkout_paths_only() -> None:
    from scripts.dist_check import strace_hits

    lines = [
        '7 openat(AT_FDCWD, "/src/pyro/pyro/data/examples/hello.yaml", O_RDONLY) = 3',
        '7 newfstatat(AT_FDCWD, "/src/pyro", {st_mode=S_IFDIR|0755, ...}, 0) = 0',
        '7 openat(AT_FDCWD, "/src/pyro-other/x", O_RDONLY) = 3',
        '7 openat(AT_FDCWD, "/tmp/venv/lib/pyro/data/examples/hello.yaml", O_RDONLY) = 3',
        '7 openat(AT_FDCWD, "hello.yaml", O_RDONLY) = 3',
    ]
    assert strace_hits(lines, {"/src/pyro"}) == lines[:2]


# -- dependencies: every third-party import is declared, and the license is shipped -------


def _runtime_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports at run time (anywhere in the file,
    functions included; ``if TYPE_CHECKING:`` blocks, which only the type checker reads, and
    relative imports left out)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith(
            "TYPE_CHECKING"
        ):
            type_only.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_distributions() -> set[str]:
    return {
        _canonical(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])
        for requirement in PYPROJECT["project"]["dependencies"]
    }


def _third_party_imports() -> dict[str, list[str]]:
    """Each third-party import name pyro's runtime code uses → the modules importing it."""
    users: dict[str, list[str]] = {}
    for path in sorted((REPO / "pyro").rglob("*.py")):
        for name in _runtime_imports(path):
            if name != "pyro" and name not in sys.stdlib_module_names:
                users.setdefault(name, []).append(str(path.relative_to(REPO)))
    return users


def test_the_import_reader_skips_type_only_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import typing\nfrom typing import TYPE_CHECKING\nimport a.b\nfrom . import c\n"
        "if TYPE_CHECKING:\n    import d\nif typing.TYPE_CHECKING:\n    from e import f\n"
        "def g():\n    from h.i import j\n"
    )
    assert _runtime_imports(source) == {"typing", "a", "h"}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    providers = importlib.metadata.packages_distributions()
    declared = _declared_distributions()
    users = _third_party_imports()
    assert {"requests", "anyio", "platformdirs", "pydantic"} <= set(users)
    undeclared = {
        name: where
        for name, where in users.items()
        if not {_canonical(dist) for dist in providers.get(name, [])} & declared
        if name not in OPTIONAL_IMPORTS
    }
    assert undeclared == {}, "declare these in pyproject.toml [project] dependencies"


# An optional extra's package -> (the extra declaring it, the only modules importing it).
OPTIONAL_IMPORTS = {"ray": ("ray", ["pyro/cluster/ray_exec.py"])}


def test_an_optional_extra_is_declared_and_imported_by_its_one_module_only() -> None:
    users = _third_party_imports()
    extras = PYPROJECT["project"]["optional-dependencies"]
    for name, (extra, modules) in OPTIONAL_IMPORTS.items():
        declared = [re.split(r"[<>=\[]", d, maxsplit=1)[0] for d in extras[extra]]
        assert name in [_canonical(d) for d in declared], extra
        assert sorted(users.get(name, [])) == modules


def test_the_license_pyproject_names_is_the_apache_2_text() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert hashlib.md5((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_MD5


def test_jsonschema_is_a_test_tool_not_a_runtime_dependency() -> None:
    """pyro validates specs with pydantic and only generates JSON Schemas; jsonschema checks
    them in the tests (draft-07), so it lives in the dev extra."""
    assert "jsonschema" not in _declared_distributions()
    assert "jsonschema" not in _third_party_imports()
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(_canonical(re.split(r"[<>=]", d, maxsplit=1)[0]) == "jsonschema" for d in dev)
