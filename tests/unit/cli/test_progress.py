"""A local environment build on a terminal: one live line with its phase and elapsed time.

``pyro env build debian:12`` runs for real (service, lock, cache install, CLI), in a child
process whose stderr is a pseudo-terminal or a pipe; only the builder is a stand-in
(``build_environment``: a real one compiles a kernel for many minutes). It logs the
phases a real build logs, a little over a second apart, and writes two small files.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]

CHILD = r"""
import os, sys, time
from pyro.environments.build import builder
from pyro.environments.build.rootfs import RootfsInfo
from pyro.errors import BuildError

def fake_build(entry, out_dir, *, cache_root, log=None):
    log(f"building {entry.name} 12.0 (sha256:0123456789ab)")
    log("kernel: make -j2 vmlinux (log: /tmp/kernel.log)")
    time.sleep(1.3)
    log("rootfs: mmdebstrap minbase bookworm + 3 packages")
    time.sleep(1.3)
    if os.environ.get("FAKE_BUILD_FAILS"):
        raise BuildError("rootfs: mmdebstrap failed (exit 1)", hint="read the build log")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vmlinux").write_bytes(b"kernel")
    (out_dir / "rootfs.ext4").write_bytes(b"rootfs")
    rootfs = RootfsInfo(out_dir / "rootfs.ext4", 6, 6, 1, "u", "l", "bookworm", "minbase", "", 0)
    return builder.BuiltEnvironment(
        entry.name, "12.0", entry.spec_digest, out_dir / "vmlinux", "sha256:0", "6.1",
        out_dir / "rootfs.ext4", rootfs, 2.6,
    )

builder.build_environment = fake_build
from pyro.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYRO_CACHE_DIR": str(tmp_path / "cache"),
        "PYRO_STATE_DIR": str(tmp_path / "state"),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }


def on_a_terminal(tmp_path: Path, *args: str, fails: bool = False) -> tuple[int, str]:
    """Exit code and everything the terminal received (stdout and stderr are the pty)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**_env(tmp_path), **({"FAKE_BUILD_FAILS": "1"} if fails else {})},
    )
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(controller)
    return child.wait(timeout=60), received.decode("utf-8", "replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty test for Linux")
def test_a_build_shows_its_phase_and_elapsed_time_on_a_terminal(tmp_path: Path) -> None:
    code, screen = on_a_terminal(tmp_path, "env", "build", "debian:12")
    assert code == 0, screen
    assert "\x1b[" in screen  # drawn and redrawn in place
    screen = re.sub(r"\x1b\[[0-9;]*m", "", screen)  # without its colours
    # The live line names the phase and counts up while the phase runs (rich's
    # TimeElapsedColumn: H:MM:SS), redrawn in place with cursor sequences.
    assert re.search(r"building debian:12: kernel: make -j2 vmlinux .*0:00:0[01]", screen)
    assert re.search(r"building debian:12: rootfs: mmdebstrap .* 0:00:0[1-9]", screen), screen
    # The phase lines still scroll above it, and the result is printed.
    assert "[build] rootfs: mmdebstrap minbase bookworm + 3 packages" in screen
    assert "[build] phase=ready environment=debian:12" in screen
    assert re.search(r"debian:12 12\.0 sha256:[0-9a-f]{64} ", screen)


def test_not_a_terminal_keeps_the_marker_lines(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "env", "build", "debian:12"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "[build] phase=install environment=debian:12",
        "[build] building debian:12 12.0 (sha256:0123456789ab)",
        "[build] kernel: make -j2 vmlinux (log: /tmp/kernel.log)",
        "[build] rootfs: mmdebstrap minbase bookworm + 3 packages",
        "[build] phase=ready environment=debian:12",
    ]
    assert result.stdout.startswith("debian:12 12.0 sha256:")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty test for Linux")
def test_quiet_shows_no_progress_even_on_a_terminal(tmp_path: Path) -> None:
    code, screen = on_a_terminal(tmp_path, "env", "build", "debian:12", "-q")
    assert code == 0, screen
    assert "building debian:12:" not in screen and "[build]" not in screen
    assert screen.strip().startswith("debian:12 12.0 sha256:")


def _can_build() -> bool:
    from pyro.environments.catalog import can_build

    return can_build()[0]


@pytest.mark.skipif(not _can_build(), reason="this host cannot build (the plan would refuse)")
def test_a_run_that_builds_shows_the_live_line_on_a_terminal_only(tmp_path: Path) -> None:
    # debian:12 is not in this cache and no registry has it: the plan builds it first.
    code, screen = on_a_terminal(tmp_path, "run", "debian:12", "--", "true", fails=True)
    assert code != 0
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert re.search(r"building debian:12: rootfs: mmdebstrap .* 0:00:0[1-9]", plain), screen
    # The live line is gone before the markers and the error are written.
    tail = screen[screen.rindex("building debian:12:") :]
    assert "[run] step=build status=error rootfs: mmdebstrap failed (exit 1)" in tail
    assert "error: rootfs: mmdebstrap failed (exit 1)" in tail
    piped = subprocess.run(
        [sys.executable, "-c", CHILD, "run", "debian:12", "--", "true"],
        env={**_env(tmp_path / "piped"), "FAKE_BUILD_FAILS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == code
    assert piped.stderr.splitlines()[:2] == [
        "[pull] phase=install environment=debian:12",
        "[run] step=build status=error rootfs: mmdebstrap failed (exit 1)",
    ]
    assert "building" not in piped.stderr and "\x1b" not in piped.stderr
