"""The console keeper bounds serial.log as the bytes arrive, keeps the boot and the latest
output, and ends with the VMM's end of the pipe (pyro.vmm.console, launch.start_process)."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pyro.errors import VMMError
from pyro.vmm import launch
from pyro.vmm.console import USAGE_EXIT, Keeper

SCRIPT = launch.CONSOLE_SCRIPT


def dropped(data: bytes) -> int:
    counts = re.findall(rb"\[pyro: serial log trimmed, (\d+) bytes", data)
    return int(counts[-1]) if counts else 0


def test_keeper_never_lets_the_log_pass_its_bound(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    keeper = Keeper(str(log), 65536, 4096)
    keeper.write(b"BOOT line\n" + b"b" * 5000)
    written = 5010
    for i in range(400):
        chunk = f"{i:05d}".encode() + b"x" * 995
        keeper.write(chunk)
        written += len(chunk)
        assert log.stat().st_size <= 65536  # after every write, not only at the end
    keeper.write(b"LAST LINE\n")
    written += 10
    keeper.close()
    data = log.read_bytes()
    assert data.startswith(b"BOOT line\n")  # the boot is kept
    assert data.endswith(b"LAST LINE\n")  # and the latest output
    assert b"00399" in data
    assert dropped(data) >= written - len(data)  # the marker says how much went
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_chunk_larger_than_the_bound_keeps_its_end(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    keeper = Keeper(str(log), 8192, 1024)
    keeper.write(b"B" * 100 + b"y" * 100_000 + b"END")
    keeper.close()
    data = log.read_bytes()
    assert len(data) <= 8192 and data.startswith(b"B" * 100) and data.endswith(b"yEND")


def test_an_oversized_log_from_before_is_trimmed_at_start(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"OLD BOOT\n" + b"z" * 300_000 + b"OLD TAIL\n")
    Keeper(str(log), 65536, 4096).close()
    data = log.read_bytes()
    assert len(data) <= 65536 and data.startswith(b"OLD BOOT") and data.endswith(b"OLD TAIL\n")


def test_keeper_does_not_write_through_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (tmp_path / "serial.log").symlink_to(target)
    with pytest.raises(OSError):
        Keeper(str(tmp_path / "serial.log"), 65536, 4096)
    assert target.read_text() == "keep\n"


def test_keeper_script_drains_a_pipe_until_end_of_file(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    flood = b"".join(f"line {i:06d} ".encode() + b"x" * 88 + b"\n" for i in range(20_000))
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), str(log), "65536", "4096"],
        input=flood,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = log.read_bytes()
    assert len(data) <= 65536
    assert data.startswith(b"line 000000 ") and data.endswith(b"line 019999 " + b"x" * 88 + b"\n")
    assert dropped(data) > len(flood) - 65536


def test_keeper_script_usage(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), str(tmp_path / "log")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == USAGE_EXIT and b"usage" in done.stderr


def test_start_process_routes_stdout_through_the_keeper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(launch.SERIAL_LOG_MAX_ENV, "65536")
    script = "import sys; sys.stdout.write('x' * 1000000 + 'END'); sys.stderr.write('own words')"
    started = launch.start_process(
        [sys.executable, "-c", script],
        workdir=tmp_path,
        ephemeral=True,
        log_path=tmp_path / "vmm.log",
        console_log=tmp_path / "serial.log",
    )
    assert started.console is not None
    assert started.vmm.wait(timeout=60) == 0
    assert started.console.wait(timeout=60) == 0  # it ends with the VMM's end of the pipe
    data = (tmp_path / "serial.log").read_bytes()
    assert len(data) <= 65536 and data.endswith(b"xEND")
    assert (tmp_path / "vmm.log").read_text() == "own words"
    for name in ("serial.log", "vmm.log"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("value", ["12", "lots", "-1"])
def test_a_bad_bound_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(launch.SERIAL_LOG_MAX_ENV, value)
    with pytest.raises(VMMError, match=launch.SERIAL_LOG_MAX_ENV):
        launch.serial_log_max_bytes()


def test_keeper_ends_when_the_vmm_cannot_start(tmp_path: Path) -> None:
    import psutil

    log = tmp_path / "serial.log"
    with pytest.raises(VMMError, match="cannot start"):
        launch.start_process(
            [str(tmp_path / "missing-vmm")],
            workdir=tmp_path,
            ephemeral=False,
            log_path=tmp_path / "vmm.log",
            console_log=log,
        )
    keepers = [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if str(log) in (proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE
    ]
    _gone, alive = psutil.wait_procs(keepers, timeout=30)
    assert not alive, "the console keeper outlived a VMM that never started"
