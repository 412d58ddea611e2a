"""How the ``pyro`` script ends: :func:`pyro.cli.main.exit_now` skips the interpreter's
teardown but keeps what a normal exit promises (flushed output, atexit, other threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyro.report.failure import EXIT_ERROR

ROOT = Path(__file__).parents[3]
PYRO = Path(sys.executable).with_name("pyro")


def _python(code: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    # Block-buffered stdout, as for any pipe (these machines set PYTHONUNBUFFERED).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_console_script_is_entry() -> None:
    # The script pip generated calls entry(), which ends in exit_now().
    if not PYRO.exists():
        pytest.skip(f"{PYRO} is not installed")
    assert "from pyro.cli.main import entry" in PYRO.read_text()


def test_buffered_output_is_flushed_and_the_code_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    code = f"""
        import sys
        from pyro.cli.main import exit_now
        sys.stdout = open({str(out)!r}, "w", buffering=1 << 20)
        sys.stdout.write("x" * 5000)
        print("still buffered", file=sys.stderr)
        exit_now(7)
    """
    done = _python(code)
    assert done.returncode == 7
    assert out.read_text() == "x" * 5000
    assert done.stderr == "still buffered\n"


def test_atexit_callbacks_and_finalizers_run(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    code = f"""
        import atexit, tempfile, weakref
        from pathlib import Path
        from pyro.cli.main import exit_now
        marks = Path({str(marks)!r})
        atexit.register(lambda: marks.joinpath("atexit").write_text("ran"))
        kept = tempfile.TemporaryDirectory(dir={str(tmp_path)!r})
        marks.mkdir()
        marks.joinpath("tempdir").write_text(kept.name)
        exit_now(0)
    """
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert (marks / "atexit").read_text() == "ran"
    # TemporaryDirectory cleans up through weakref.finalize, which atexit runs.
    assert not Path((marks / "tempdir").read_text()).exists()


def test_running_threads_get_a_normal_exit(tmp_path: Path) -> None:
    mark = tmp_path / "late"
    code = f"""
        import threading, time
        from pathlib import Path
        from pyro.cli.main import exit_now

        def late():
            time.sleep(0.3)
            Path({str(mark)!r}).write_text("done")

        threading.Thread(target=late).start()
        exit_now(4)
    """
    done = _python(code)
    assert done.returncode == 4
    assert mark.read_text() == "done"


def test_a_reader_gone_at_exit_means_exit_error() -> None:
    # The output fits the pipe's buffer but nobody reads it: the final flush fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    code = """
        import sys
        from pyro.cli.main import exit_now
        sys.stdout.write("plan\\n" * 10)
        exit_now(0)
    """
    try:
        done = _python(code, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == EXIT_ERROR
    assert done.stderr == ""


def test_pyro_plan_output_is_complete_through_a_pipe() -> None:
    if not PYRO.exists():
        pytest.skip(f"{PYRO} is not installed")
    script = subprocess.run(
        [str(PYRO), "plan", "--json", str(ROOT / "examples" / "hello.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert script.returncode == 0, script.stderr
    assert json.loads(script.stdout)["metadata"]["name"] == "hello"
