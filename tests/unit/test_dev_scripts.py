"""The developer entry points outside pyro/ (soak, bench, scripts) name only what pyro has.

They are not type-checked with the package, so a moved or renamed pyro name would only show
when `make soak` or `make bench` runs; this reads their imports and resolves each one.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for d in ("soak", "bench", "scripts") for p in (ROOT / d).glob("*.py"))


def _pyro_imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("pyro")]
    return found


def _resolves(module: str, name: str) -> bool:
    loaded = importlib.import_module(module)
    if not name or hasattr(loaded, name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True


def test_the_reader_sees_a_missing_name(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("def f():\n    from pyro.machines.record import no_such_name\n")
    [(module, name)] = _pyro_imports(script)
    assert not _resolves(module, name)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_pyro_name_a_script_imports_exists(path: Path) -> None:
    missing = [f"{m}.{n}" for m, n in _pyro_imports(path) if not _resolves(m, n)]
    assert missing == []
