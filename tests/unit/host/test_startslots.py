"""Start slots (pyro.host.startslots): real flocks on real files, real processes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.procs import wait_until_open

from pyro.errors import UsageError
from pyro.host import startslots
from pyro.host.startslots import StartSlot, acquire, slot_count


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_slot_count_defaults_to_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYRO_START_SLOTS", raising=False)
    assert slot_count() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("PYRO_START_SLOTS", " 3 ")
    assert slot_count() == 3
    monkeypatch.setenv("PYRO_START_SLOTS", "1024")
    assert slot_count() == 1024
    monkeypatch.setenv("PYRO_START_SLOTS", "0")
    assert slot_count() == 0


@pytest.mark.parametrize("value", ["two", "-1", "1.5", "2x", "\u00b2", "1025"])
def test_a_bad_slot_count_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PYRO_START_SLOTS", value)
    with pytest.raises(UsageError) as caught:
        acquire(directory=Path("/nonexistent"))
    assert f"PYRO_START_SLOTS={value!r}" in caught.value.summary
    assert "up to 1024 (0 turns start slots off)" in caught.value.hint


def test_slots_are_taken_until_none_is_free(tmp_path: Path) -> None:
    before = open_fds()
    first = acquire(slots=2, directory=tmp_path)
    second = acquire(slots=2, directory=tmp_path)
    assert first.held and second.held and first.slots == 2
    third = acquire(slots=2, directory=tmp_path, wait_s=0.05)
    assert not third.held
    assert third.waited_s >= 0.05
    first.release()
    first.release()  # idempotent
    fourth = acquire(slots=2, directory=tmp_path, wait_s=0)
    assert fourth.held
    second.release()
    fourth.release()
    assert open_fds() == before, "a slot that was not kept left its file open"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]


def test_a_waiting_start_gets_the_slot_another_gives_back(tmp_path: Path) -> None:
    holder = acquire(slots=1, directory=tmp_path)
    assert holder.held
    timer = threading.Timer(0.2, holder.release)
    timer.start()
    try:
        waiter = acquire(slots=1, directory=tmp_path, wait_s=30)
    finally:
        timer.join()
    assert waiter.held
    assert waiter.waited_s >= 0.2
    waiter.release()


def test_slots_off_or_unusable_means_starting_without_one(tmp_path: Path) -> None:
    off = acquire(slots=0, directory=tmp_path / "never")
    assert not off.held and off.waited_s == 0 and off.slots == 0
    assert not (tmp_path / "never").exists()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    unusable = acquire(slots=2, directory=blocked / "start-slots")
    assert not unusable.held and unusable.waited_s == 0


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pyro.host.startslots import acquire\n"
        f"slot = acquire(slots=1, directory=Path({str(tmp_path)!r}))\n"
        "print('held' if slot.held else 'free', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        assert not acquire(slots=1, directory=tmp_path, wait_s=0).held
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        after = acquire(slots=1, directory=tmp_path, wait_s=5)
        assert after.held
        after.release()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def one_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One start slot in a private state dir; yields its folder. The process slot is
    given back at the end, whatever the test did."""
    monkeypatch.setenv("PYRO_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PYRO_START_SLOTS", "1")
    yield tmp_path / "start-slots"
    startslots.release_process_slot()


def assert_free(folder: Path) -> None:
    other = acquire(slots=1, directory=folder, wait_s=0)
    assert other.held, "the slot was not given back"
    other.release()


def test_the_process_slot_serves_the_first_start_only(one_slot: Path) -> None:
    startslots.take_for_process()
    startslots.take_for_process()  # a second call keeps the slot it has
    assert not acquire(slots=1, directory=one_slot, wait_s=0).held
    with startslots.start_slot() as slot:
        assert slot.held  # the process's own: taking another would have waited
    assert_free(one_slot)


def test_release_of_the_process_slot_frees_it_for_others(one_slot: Path) -> None:
    startslots.take_for_process()
    startslots.release_process_slot()
    startslots.release_process_slot()  # idempotent
    assert_free(one_slot)


def test_take_for_process_leaves_a_bad_count_to_the_boot_step(
    one_slot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_START_SLOTS", "many")
    startslots.take_for_process()  # no exception here
    with pytest.raises(UsageError), startslots.start_slot():
        pass


def test_start_slot_releases_on_error(one_slot: Path) -> None:
    with pytest.raises(RuntimeError), startslots.start_slot() as slot:
        assert isinstance(slot, StartSlot) and slot.held
        raise RuntimeError("boot failed")
    assert_free(one_slot)


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (["run", "debian:12", "--", "true"], True),
        (["apply", "run.yaml"], True),
        (["demo"], True),
        (["-q", "run", "debian:12", "--", "true"], True),
        (["--verbose", "apply", "run.yaml"], True),
        (["-v", "run", "--help"], False),
        (["-q"], False),
        (["run", "--help"], False),
        (["apply", "-h"], False),
        (["plan", "run.yaml"], False),
        (["task", "exec", "t1", "--", "true"], False),
        ([], False),
    ],
)
def test_the_cli_takes_a_slot_only_for_commands_that_start_a_guest(
    args: list[str], starts: bool
) -> None:
    from pyro.cli.main import starts_a_guest

    assert starts_a_guest(args) is starts


def test_ctrl_c_while_waiting_for_a_slot_is_a_clean_interrupt(one_slot: Path) -> None:
    held = acquire(slots=1, directory=one_slot)
    assert held.held
    child = subprocess.Popen(
        [sys.executable, "-m", "pyro.cli", "run", "debian:12", "--", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Waiting means the slot files are open: look for them among the child's files.
        assert wait_until_open(child.pid, one_slot), "the run never waited for a start slot"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
        held.release()
    assert child.returncode == 130
    assert err == "interrupted\n" and out == ""
    assert not (one_slot.parent / "vms").exists() or not any((one_slot.parent / "vms").iterdir())


def test_an_interrupted_wait_leaves_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = acquire(slots=2, directory=tmp_path)
    other = acquire(slots=2, directory=tmp_path)
    before = open_fds()

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(startslots.time, "sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        acquire(slots=2, directory=tmp_path, wait_s=30)
    assert open_fds() == before
    held.release()
    other.release()


def test_a_filesystem_without_locks_means_starting_without_a_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = open_fds()

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(startslots.fcntl, "flock", no_locks)
    slot = acquire(slots=2, directory=tmp_path)
    assert not slot.held and slot.slots == 0
    assert open_fds() == before
