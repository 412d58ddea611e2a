"""``pyro mcp serve``'s command line: lazy imports and help."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from pyro.cli.main import cli

CHECK_IMPORTS = """
import sys
from pyro.cli.main import main
try:
    main(sys.argv[1:])
finally:
    loaded = sorted(m for m in sys.modules if m == "mcp" or m.startswith("mcp."))
    print("MCP-MODULES:", loaded, file=sys.stderr)
"""


def loaded_mcp_modules(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return next(line for line in proc.stderr.splitlines() if line.startswith("MCP-MODULES:"))


def test_help_does_not_import_mcp() -> None:
    assert loaded_mcp_modules("--help") == "MCP-MODULES: []"
    assert loaded_mcp_modules("mcp", "serve", "--help") == "MCP-MODULES: []"


def test_serve_help_names_the_profiles() -> None:
    result = CliRunner().invoke(cli, ["mcp", "serve", "--help"])
    assert result.exit_code == 0
    for profile in ("vm-run", "task-core", "full"):
        assert profile in result.output
