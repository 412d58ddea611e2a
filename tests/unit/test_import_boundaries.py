"""Import boundaries: the pure core stays pure, and the layout's arrows all point down.

pyro.spec and pyro.plan stay pure: no effectful pyro modules, no network or VMM libraries.
Checked twice: by importing them in a fresh interpreter and looking at ``sys.modules``, and
by reading their source for forbidden imports (the stdlib itself may import subprocess or
socket indirectly, so the source check is what pins pyro's own code).

The layout (the second half): at most five top-level modules, no import cycle between
modules or packages, every import allowed by the layer table that docs/architecture.md
shows, and nothing below the faces importing the facade or a face.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Collection
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
    "pyro.process",
    "pyro.tasks",
    "pyro.sdk",
    "pyro.report",
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
    # Lazy on purpose: only templates need jinja2. jsonschema is a test tool (dev extra).
    "jinja2",
    "jsonschema",
    "ray",
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
    allowed_lazy = {"jinja2"}
    if relative in ("pyro/spec/template.py", "pyro/spec/undefined.py"):
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
    "ray",  # the cluster extra: only `--on ray://…` imports it
    "pyro.cluster",
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


MATRIX = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: m}
spec:
  environment: debian:12
  backend: qemu-tcg
  matrix: {n: {range: 2}}
  steps: [{name: t, run: "echo {{ vars.n }}"}]
"""


def test_a_local_matrix_apply_never_imports_ray(
    guest_install: object, pyro_state: Path, tmp_path: Path
) -> None:
    # Ray is installed here (the cluster tests use it), so only pyro's own imports keep
    # it out. Each instance is stopped at its VMM spawn; the modules are listed at exit.
    (tmp_path / "m.yaml").write_text(MATRIX)
    code = (
        "import sys, json, atexit\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules))))\n"
        "class Stop(Exception): pass\n"
        "def stop(*a, **k):\n"
        "    raise Stop\n"
        "import pyro.vmm.qemu as q\n"
        "q.QemuBackend.spawn = stop\n"
        "q.QemuBackend.restore = stop\n"
        f"sys.argv = ['pyro', 'apply', {str(tmp_path / 'm.yaml')!r}]\n"
        "from pyro.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "from pyro.machines.registry import VMRegistry\n"
        "for record in VMRegistry().list():\n"
        "    VMRegistry().delete(record.id)\n"
    )
    result = _python(code)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert lines, f"the apply never finished:\n{result.stderr[-2000:]}"
    modules = set(json.loads(lines[-1]))
    assert "pyro.cluster.local" in modules  # it did dispatch the instances here
    assert _among(modules, ["ray", "pyro.cluster.ray_exec", "pyro.cluster.worker"]) == []


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
# registry clients, no templates; and nothing a success does not need (docs/performance.md):
# no subprocess (a cached probe asks no VMM), no failure reporting, no VMM protocol types,
# no did-you-mean, no pydantic serializer decorators.
NOT_IN_PLAN = [
    "subprocess",
    "difflib",
    "pyro.report",
    "pyro.vmm.base",
    "pyro.net",
    "pydantic.functional_serializers",
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


# --- the layout: at most five top-level modules, no import cycle, every arrow points down ----
#
# Imports are read from the AST of every module under pyro/, wherever they sit: at module
# level, inside functions (lazy imports are still arrows), and under ``if TYPE_CHECKING:``
# (an annotation that needs a module above is an arrow pointing up all the same). A string
# that names a pyro module (``"pyro.tasks.files"`` in a lazy-attribute table,
# ``"pyro.cli.run_cmd:run"``, an ``import_module`` argument) is an import by name and counts
# too; a package named as the anchor of its data (``importlib.resources.files("pyro.data")``)
# does not.

PYRO = ROOT / "pyro"
MAX_TOP_LEVEL_MODULES = 5

# Groups of packages, from the bottom up, as docs/architecture.md names them.
GROUPS: dict[str, frozenset[str]] = {
    "base": frozenset({"pyro.errors", "pyro.paths", "pyro.lazy", "pyro.__about__"}),
    "core": frozenset({"pyro.spec", "pyro.plan"}),
    "adapters": frozenset({"pyro.oci", "pyro.vmm", "pyro.guest", "pyro.net"}),
    "domain": frozenset(
        {
            "pyro.cluster",
            "pyro.tasks",
            "pyro.execute",
            "pyro.machines",
            "pyro.host",
            "pyro.environments",
        }
    ),
}
_DOMAIN_BELOW = {
    "pyro.cluster": "tasks, execute, machines, host, environments",
    "pyro.tasks": "execute, machines, host, environments",
    "pyro.execute": "machines, host, environments",
    "pyro.machines": "host, environments",
    "pyro.host": "environments",
    "pyro.environments": "",
}

# package -> what it may import (besides itself): the table in docs/architecture.md.
# "pyro" is pyro/__init__.py, the public surface; the faces are pyro, cli and mcp.
MAY_IMPORT: dict[str, str] = {
    "pyro": "sdk, spec, base",
    "pyro.cli": "mcp, report, sdk, domain, adapters, core, process, base",
    "pyro.mcp": "report, sdk, domain, adapters, core, process, base",
    "pyro.sdk": "domain, adapters, core, process, base",
    "pyro.report": "base",
    **{
        package: ", ".join(filter(None, [below, "adapters, core, process, base"]))
        for package, below in _DOMAIN_BELOW.items()
    },
    "pyro.vmm": "net, core, process, base",
    "pyro.net": "core, process, base",
    "pyro.oci": "core, base",
    "pyro.guest": "core, base",
    "pyro.plan": "spec, base",
    "pyro.spec": "base",
    "pyro.process": "base",
    "pyro.errors": "",
    "pyro.paths": "",
    "pyro.lazy": "",
    "pyro.__about__": "",
    "pyro.data": "",
}
FACES = frozenset({"pyro", "pyro.cli", "pyro.mcp"})
FACADE_AND_FACES = frozenset({"pyro.sdk", "pyro.cli", "pyro.mcp"})

# Upward imports another branch of issue #18 removes (r18-exec: the one exec path in
# pyro/machines/exec.py). Each must still exist: once it is gone, delete it here.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def expand(names: str) -> frozenset[str]:
    """``"sdk, core, base"`` -> the packages those names and group names stand for."""
    found: set[str] = set()
    for name in filter(None, (part.strip() for part in names.split(","))):
        found |= GROUPS.get(name, {f"pyro.{name}"})
    return frozenset(found)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module under ``root``/pyro."""
    names = {}
    for path in sorted((root / "pyro").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(module: str, path: Path, modules: Collection[str]) -> set[str]:
    """The pyro modules ``module`` (at ``path``) imports, wherever the import sits (see
    above); a name is cut back to the module that defines it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    # importlib.resources.files("pyro.data") names where package data lives, not code.
    anchors = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and node.args
        if getattr(node.func, "attr", getattr(node.func, "id", None)) == "files"
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                names.add(submodule if submodule in modules else target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in anchors:
                continue
            named = node.value.split(":", 1)[0]
            if named.startswith("pyro.") and named in modules:
                names.add(named)
    found = set()
    for name in names:
        if name != "pyro" and not name.startswith("pyro."):
            continue
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            found.add(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the pyro modules it imports."""
    modules = module_names(root)
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def package_of(module: str) -> str:
    """``pyro.environments.cache.store`` -> ``pyro.environments``; top-level modules are
    their own package, and ``pyro`` (its __init__) is ``pyro``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        mine = packages.setdefault(package_of(module), set())
        mine.update(package_of(t) for t in targets if package_of(t) != package_of(module))
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _graph_without_known_upward() -> dict[str, set[str]]:
    graph = import_graph(ROOT)
    for source, target in KNOWN_UPWARD:
        graph.get(source, set()).discard(target)
    return graph


def test_cycle_finder_finds_cycles_in_a_synthetic_graph() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}}) == [
        ["a", "b"],
        ["c", "d"],
    ]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_import_reader_sees_lazy_type_checking_relative_and_by_name_imports(
    tmp_path: Path,
) -> None:
    (tmp_path / "pyro" / "up").mkdir(parents=True)
    files = {
        "pyro/__init__.py": "",
        "pyro/low.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pyro.up.typed import T\n"
            "def f():\n    from . import up\n"
            "HOMES = {'x': 'pyro.up.named'}\n"
        ),
        "pyro/up/__init__.py": "from .typed import T\n",
        "pyro/up/typed.py": "import pyro.low\nT = 1\n",
        "pyro/up/named.py": "from importlib.resources import files\nDATA = files('pyro.low')\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["pyro.low"] == {"pyro.up", "pyro.up.typed", "pyro.up.named"}
    assert graph["pyro.up"] == {"pyro.up.typed"}
    assert graph["pyro.up.named"] == set()  # a data anchor is not an import
    assert cycles(graph) == [["pyro.low", "pyro.up", "pyro.up.typed"]]
    assert package_graph(graph)["pyro.low"] == {"pyro.up"}


def test_pyro_has_at_most_five_top_level_modules() -> None:
    top = sorted(path.name for path in PYRO.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"pyro/ holds {top}: give the new one a package"


def test_no_module_imports_itself_in_a_circle() -> None:
    assert cycles(_graph_without_known_upward()) == []


def test_no_package_imports_itself_in_a_circle() -> None:
    assert cycles(package_graph(_graph_without_known_upward())) == []


def test_the_layer_table_covers_every_package_and_points_down() -> None:
    allowed = {package: expand(names) for package, names in MAY_IMPORT.items()}
    assert set(package_graph(import_graph(ROOT))) == set(allowed)
    assert all(targets <= set(allowed) for targets in allowed.values())
    assert cycles({package: set(targets) for package, targets in allowed.items()}) == []


def test_every_import_points_down_the_layer_table() -> None:
    allowed = {package: expand(names) for package, names in MAY_IMPORT.items()}
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph_without_known_upward().items()
        for target in targets
        if package_of(target) != package_of(module)
        and package_of(target) not in allowed[package_of(module)]
    )
    assert upward == [], "see the layer table in docs/architecture.md"


def test_nothing_below_the_faces_imports_the_facade_or_a_face() -> None:
    graph = _graph_without_known_upward()
    bad = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if package_of(module) not in FACES | {"pyro.sdk"}
        for target in targets
        if package_of(target) in FACADE_AND_FACES
    )
    assert bad == []
    # The MCP server runs without the CLI.
    assert not any(
        package_of(target) == "pyro.cli"
        for module, targets in graph.items()
        if package_of(module) == "pyro.mcp"
        for target in targets
    )


def test_known_upward_imports_still_exist() -> None:
    graph = import_graph(ROOT)
    gone = [edge for edge in KNOWN_UPWARD if edge[1] not in graph.get(edge[0], set())]
    assert gone == [], f"{gone} no longer exist: delete them from KNOWN_UPWARD"


def _documented_table() -> dict[str, str]:
    """The ``| package | owns | may import |`` rows of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            name = cells[0].strip("`").split()[0].rstrip("/").removesuffix(".py")
            package = "pyro" if name == "__init__" else f"pyro.{name}"
            rows[package] = cells[2].replace("`", "").replace("—", "")
    return rows


def test_docs_show_the_same_layer_table() -> None:
    documented = {package: expand(names) for package, names in _documented_table().items()}
    assert documented == {package: expand(names) for package, names in MAY_IMPORT.items()}
