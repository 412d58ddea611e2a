"""pyro.tasks.session: finding and ending a task's keeper by its files, safely."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from pyro.guest import keeper
from pyro.tasks.session import PIDFILE, SOCK, connect_keeper, end_keeper, keeper_pid


def test_a_pid_file_naming_another_process_is_not_a_keeper(tmp_path: Path) -> None:
    (tmp_path / PIDFILE).write_text(f"{os.getpid()}\n")  # this pytest, not a keeper
    assert keeper_pid(tmp_path, "abc123abc123") is None
    (tmp_path / SOCK).write_text("")
    end_keeper(tmp_path, "abc123abc123")  # must not kill us; removes the stale files
    assert not (tmp_path / PIDFILE).exists() and not (tmp_path / SOCK).exists()
    (tmp_path / PIDFILE).write_text("not a pid")
    assert keeper_pid(tmp_path, "abc123abc123") is None


def test_a_socket_left_by_a_dead_keeper_is_no_keeper(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / SOCK))
    listener.close()  # bound, nobody listening: what a killed keeper leaves
    assert connect_keeper(tmp_path) is None
    assert connect_keeper(tmp_path / "missing") is None


def test_a_keeper_of_another_task_is_not_ours_and_ours_is_ended(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", keeper.__file__, "pyro-aaaaaaaaaaaa"]
    )
    try:
        (tmp_path / PIDFILE).write_text(f"{proc.pid}\n")
        end = time.monotonic() + 10
        while keeper_pid(tmp_path, "aaaaaaaaaaaa") is None and time.monotonic() < end:
            time.sleep(0.02)  # until the child has exec'd
        assert keeper_pid(tmp_path, "aaaaaaaaaaaa") == proc.pid
        assert keeper_pid(tmp_path, "bbbbbbbbbbbb") is None
        end_keeper(tmp_path, "aaaaaaaaaaaa")
        assert proc.wait(5) == -9
    finally:
        proc.kill()
        proc.wait()


def test_the_keeper_program_refuses_bad_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-S", keeper.__file__, "pyro-x", "a"], capture_output=True, text=True
    )
    assert out.returncode == keeper.USAGE_EXIT
    assert out.stderr.startswith("usage: keeper.py")
