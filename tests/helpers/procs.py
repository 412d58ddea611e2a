"""Looking at another process from a test: what it has open."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def open_files(pid: int) -> list[str]:
    """The paths a process has open (those it closes meanwhile are left out)."""
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            paths.append(os.readlink(fd))
    return paths


def wait_until_open(pid: int, folder: Path, timeout: float = 6.0) -> bool:
    """Wait until process ``pid`` has a file under ``folder`` open; False on timeout."""
    for _ in range(int(timeout / 0.01)):
        if any(path.startswith(str(folder)) for path in open_files(pid)):
            return True
        threading.Event().wait(0.01)
    return False
