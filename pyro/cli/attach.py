"""``pyro task shell``'s terminal: the local TTY in raw mode wired to a shell in the guest.

Every key goes to the guest (Ctrl-C interrupts the guest's program, not pyro), except the
detach key Ctrl-] (as in telnet), which leaves the shell running. The window size follows
the local terminal (SIGWINCH). Guest output is written as it is: it is a terminal session,
its escape sequences are meant for this terminal.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from types import FrameType

from pyro.errors import PyroError, UsageError
from pyro.tasks.procs import ProcessOutput
from pyro.tasks.shells import ShellChannel

DETACH_KEY = b"\x1d"  # Ctrl-]
#: How much of a shell's recent output a (re-)attach shows first.
REPLAY_BYTES = 64 * 1024


def terminal_size() -> tuple[int, int]:
    """(rows, columns) of the local terminal (24 x 80 when it cannot say)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 24, 80
    return max(1, min(size.lines, 1000)), max(1, min(size.columns, 1000))


def check_terminal() -> None:
    """Raises: UsageError: stdin or stdout is not a terminal."""
    if not (os.isatty(sys.stdin.fileno()) and os.isatty(sys.stdout.fileno())):
        raise UsageError(
            "pyro task shell needs a terminal on stdin and stdout",
            "programs use 'pyro task exec', or the SDK/MCP shell calls "
            "(open, write, read with a cursor)",
        )


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Pump(threading.Thread):
    """Guest output to the local terminal, until the shell ends or ``stop`` is set."""

    def __init__(self, channel: ShellChannel, cursor: int, wake: int) -> None:
        super().__init__(daemon=True)
        self.channel = channel
        self.cursor = cursor
        self.wake = wake
        self.stop = threading.Event()
        self.last: ProcessOutput | None = None
        self.error: PyroError | None = None

    def run(self) -> None:
        out = sys.stdout.fileno()
        try:
            while not self.stop.is_set():
                got = self.channel.read(self.cursor, wait_s=0.5)
                self.last = got
                self.cursor = got.cursor
                if got.missed:
                    os.write(out, f"\r\n[pyro: {got.missed} bytes of output lost]\r\n".encode())
                view = memoryview(got.data)
                while view:
                    view = view[os.write(out, view) :]
                if not got.running and not got.data:
                    break
        except PyroError as exc:
            self.error = exc
        finally:
            with contextlib.suppress(OSError):  # the terminal side is gone already
                os.write(self.wake, b"x")


def attach(channel: ShellChannel) -> ProcessOutput | None:
    """Run the terminal until the shell ends (returns its last read) or the user detaches
    (returns None).

    Raises:
        PyroError: the connection or the shell failed meanwhile.
    """
    stdin = sys.stdin.fileno()
    wake_r, wake_w = os.pipe()
    channel.resize(*terminal_size())
    pump = _Pump(channel, max(0, channel.end() - REPLAY_BYTES), wake_w)

    def on_winch(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.write(wake_w, b"w")

    previous = signal.signal(signal.SIGWINCH, on_winch)
    detached = False
    try:
        with raw_mode(stdin):
            pump.start()
            while True:
                ready, _, _ = select.select([stdin, wake_r], [], [])
                if wake_r in ready:
                    woke = os.read(wake_r, 64)
                    if b"x" in woke:  # the shell ended, or reading it failed
                        break
                    channel.resize(*terminal_size())
                    continue
                data = os.read(stdin, 4096)
                if not data:  # the terminal went away: leave the shell running
                    detached = True
                    break
                if DETACH_KEY in data:
                    before = data.split(DETACH_KEY, 1)[0]
                    if before:
                        channel.write(before)
                    detached = True
                    break
                channel.write(data)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        pump.stop.set()
        pump.join(timeout=5)
        os.close(wake_r)
        os.close(wake_w)
    if pump.error is not None:
        raise pump.error
    return None if detached else pump.last
