"""pyro.spec and pyro.plan stay pure: no effectful pyro modules, no network or VMM libraries.

Checked twice: by importing them in a fresh interpreter and looking at ``sys.modules``, and
by reading their source for forbidden imports (the stdlib itself may import subprocess or
socket indirectly, so the source check is what pins pyro's own code).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_PACKAGES = ["pyro.spec", "pyro.plan"]

# Modules that must not be loaded by importing the pure packages.
FORBIDDEN_MODULES = [
    "pyro.vmm",
    "pyro.guest",
    "pyro.environments",
    "pyro.execute",
    "pyro.oci",
    "pyro.host",
    "pyro.machines",
    "pyro.tasks",
    "pyro.sdk",
    "pyro.mcp",
    "pyro.cli",
    "oras",
    "httpx",
    "requests",
    "mcp",
    "qemu",
    "psutil",
    "filelock",
    "tenacity",
    "zstandard",
    "rich",
    # Lazy on purpose: only templates need jinja2, only the schema tool needs jsonschema.
    "jinja2",
    "jsonschema",
]

# Imports pyro.spec/pyro.plan source may not write at all.
FORBIDDEN_IMPORTS = {
    "subprocess",
    "socket",
    "shutil",
    "ctypes",
    "multiprocessing",
    "asyncio",
    "urllib.request",
    "http.client",
    *FORBIDDEN_MODULES,
}
# The schema tool writes files by design; it is a developer entry point, not imported by
# the loader or planner.
TOOL_MODULES = {"pyro/spec/schema/files.py"}


def loaded_modules(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def _hits(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        for bad in FORBIDDEN_MODULES
        if name == bad or name.startswith(bad + ".")
    )


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_importing_pure_package_loads_nothing_effectful(package: str) -> None:
    assert _hits(loaded_modules(f"import {package}")) == []


def test_loading_and_planning_a_spec_loads_nothing_effectful() -> None:
    code = (
        "import pyro.spec, pyro.plan\n"
        "from pyro.spec import load_spec_documents\n"
        "load_spec_documents('examples/hello.yaml')\n"
        "load_spec_documents('tests/specs/valid/multi-document.yaml')\n"
    )
    assert _hits(loaded_modules(code)) == []


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source_files() -> list[Path]:
    files = []
    for package in PURE_PACKAGES:
        files.extend(sorted((ROOT / package.replace(".", "/")).rglob("*.py")))
    return files


def test_there_is_source_to_check() -> None:
    assert len(_source_files()) >= 5


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_source_has_no_forbidden_imports(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    imports = _imports(path)
    bad = sorted(
        name
        for name in imports
        for forbidden in FORBIDDEN_IMPORTS
        if name == forbidden or name.startswith(forbidden + ".")
    )
    allowed_lazy = {"jinja2", "jsonschema"}
    if relative == "pyro/spec/template.py":
        bad = [name for name in bad if name.split(".")[0] not in allowed_lazy]
    assert bad == [], f"{relative} imports {bad}"
    if relative not in TOOL_MODULES:
        source = path.read_text(encoding="utf-8")
        for call in ("os.system", "os.popen", "os.exec", "os.spawn", "os.fork", ".write_text("):
            assert call not in source, f"{relative} calls {call}"


# What `pyro run` must not have loaded when it starts the VMM: everything here is either
# unused by a run or needed only after the spawn, while the guest boots (docs/performance.md).
NOT_BEFORE_SPAWN = [
    "yaml",  # spec data needs no YAML parser; the catalog comes from its cached summary
    "jinja2",
    "psutil",  # watched processes only exist after the spawn
    "pyro.vmm.firecracker",
    "pyro.net.tap",
    "pyro.guest.client",
    "pyro.tasks.manager",
    "pyro.tasks.files",
    "pyro.tasks.journal",
    "pyro.tasks.snapshots",
    "pyro.oci",
    "pyro.mcp",
    "httpx",
    "oras",
]


def test_a_run_loads_only_what_it_needs_before_the_vmm_starts(
    guest_install: object, pyro_state: Path
) -> None:
    # The QEMU backend is stopped at its spawn (or restore), where the modules are listed;
    # the VM record the run made is deleted before the process exits.
    code = (
        "import sys, json\n"
        "class Stop(BaseException): pass\n"
        "def stop(*a, **k):\n"
        "    print(json.dumps(sorted(sys.modules)))\n"
        "    raise Stop\n"
        "import pyro.vmm.qemu as q\n"
        "q.QemuBackend.spawn = stop\n"
        "q.QemuBackend.restore = stop\n"
        "sys.argv = ['pyro', 'run', '--backend', 'qemu-tcg', 'debian:12', '--', 'true']\n"
        "from pyro.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except (Stop, SystemExit):\n"
        "    pass\n"
        "from pyro.machines.registry import VMRegistry\n"
        "for record in VMRegistry().list():\n"
        "    VMRegistry().delete(record.id)\n"
    )
    result = _python(code)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert lines, f"the run never reached the VMM:\n{result.stderr[-2000:]}"
    modules = set(json.loads(lines[-1]))
    assert "pydantic" in modules and "pyro.plan.planner" in modules  # it did plan
    assert _among(modules, NOT_BEFORE_SPAWN) == []


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def _among(modules: set[str], packages: list[str]) -> list[str]:
    """The loaded modules that are, or belong to, one of ``packages``."""
    return sorted(
        name for name in modules for bad in packages if name == bad or name.startswith(bad + ".")
    )


# 'pyro plan' and 'pyro validate' only read: no locks, no process handling, no VMM, no
# registry clients, no templates.
NOT_IN_PLAN = [
    "filelock",
    "psutil",
    "pyro.machines",
    "pyro.execute.apply",
    "pyro.execute.pool",
    "pyro.execute.warm",
    "pyro.execute.transfer",
    "pyro.vmm.qemu",
    "pyro.vmm.firecracker",
    "pyro.guest.client",
    "oras",
    "httpx",
    "mcp",
    "jinja2",
]


@pytest.mark.parametrize("command", ["plan", "validate"])
def test_plan_and_validate_load_only_what_reading_needs(command: str) -> None:
    code = (
        "import sys, json\n"
        f"sys.argv = ['pyro', {command!r}, 'examples/hello.yaml']\n"
        "from pyro.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "pydantic" in modules and "yaml" in modules  # it did read and validate
    assert _among(modules, NOT_IN_PLAN) == []
