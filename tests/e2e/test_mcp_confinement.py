"""A hostile MCP caller's artifacts on a real guest: they land in a fresh folder inside the
server's root, never over the user's files (``Makefile``), a target in ``.git`` is refused
before anything boots, and relative ``files[].source`` start at the root, not the server's
working directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

pytestmark = [pytest.mark.guest, pytest.mark.hostile, pytest.mark.slow]

GIT_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
PLANT = (
    "mkdir -p /out/.git /out/tree"
    " && printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > /out/.git/config"
    " && echo 'all: ; touch /tmp/pwned' > /out/Makefile"
    " && echo nested > /out/tree/file"
    " && cat /tmp/input.txt"
)


def spec(*, git: bool = False) -> dict[str, Any]:
    artifacts = [
        {"source": "/out/Makefile", "target": "Makefile"},
        {"source": "/out/tree", "target": "./"},
    ]
    if git:  # core.fsmonitor ran at the next `git status`, even from inside .pyro-artifacts
        artifacts.insert(0, {"source": "/out/.git/config", "target": ".git/config"})
    body = {
        "environment": "debian:12",
        "timeoutSeconds": 300,
        "files": [{"source": "input.txt", "target": "/tmp/input.txt"}],
        "steps": [{"name": "plant", "run": PLANT}],
        "artifacts": artifacts,
    }
    return {"apiVersion": "pyro/v1", "kind": "Run", "metadata": {"name": "plant"}, "spec": body}


@pytest.mark.parametrize("server_root", ["cwd", "env"])
def test_mcp_artifacts_land_in_a_fresh_folder_never_over_the_users_files(
    tmp_path: Path,
    guest_install: Any,
    pyro_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    server_root: str,
) -> None:
    """``cwd``: the server runs in the project (no PYRO_MCP_ROOT), as when the issue was
    seen; ``env``: PYRO_MCP_ROOT names the project and the server runs elsewhere."""
    from pyro.machines.registry import VMRegistry
    from pyro.mcp.server import build_server
    from pyro.sdk import Pyro

    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_text(GIT_CONFIG)
    (root / "Makefile").write_text("all:\n\techo mine\n")
    (root / "input.txt").write_text("read from the root\n")
    (tmp_path / "input.txt").write_text("read from the working directory\n")
    if server_root == "env":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("PYRO_MCP_ROOT", str(root))
    else:
        monkeypatch.chdir(root)
        monkeypatch.delenv("PYRO_MCP_ROOT", raising=False)

    async def main() -> list[dict[str, Any]]:
        async with Client(build_server("full", sdk=Pyro())) as client:
            refused = await client.call_tool("apply", {"spec": spec(git=True)})
            first = await client.call_tool("apply", {"spec": spec()})
            second = await client.call_tool("vm_run", {"spec": spec()})
        error = (refused.structured_content or {}).get("error", {})
        assert refused.is_error and error.get("type") == "SpecError", refused.content
        assert "/spec/artifacts/0/target" in str(error) and "git" in str(error)
        for result in (first, second):
            assert not result.is_error, result.content
        return [first.structured_content or {}, second.structured_content or {}]

    results = anyio.run(main)
    assert (root / ".git" / "config").read_text() == GIT_CONFIG
    assert (root / "Makefile").read_text() == "all:\n\techo mine\n"
    assert not (root / "tree").exists()
    folders = []
    for result in results:
        assert result["ok"], result
        assert result["steps"][[s["action"] for s in result["steps"]].index("exec")]["stdout"] == (
            "read from the root\n"
        )
        folder = Path(result["artifacts_dir"])
        assert folder.parent == root / ".pyro-artifacts" and folder.name.startswith("plant-")
        assert not (folder / ".git").exists()
        assert (folder / "Makefile").read_text() == "all: ; touch /tmp/pwned\n"
        assert (folder / "tree" / "file").read_text() == "nested\n"
        folders.append(folder)
    assert folders[0] != folders[1]  # each run gets its own folder
    assert sorted(p.name for p in (root / ".pyro-artifacts").iterdir()) == sorted(
        [".gitignore", folders[0].name, folders[1].name]
    )
    assert VMRegistry(pyro_state).list() == []
