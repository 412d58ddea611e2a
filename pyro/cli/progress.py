"""How an environment pull, build or push shows its progress on stderr.

Not a terminal (a pipe, a file, CI logs): one marker line per event, as always —
``[pull] phase=install environment=X``, ``[build] kernel: …``, ``[pull] phase=ready …``.
On a terminal, the same lines scroll, and below them one live line says where the work
is: a bar per download or upload, or, during a local build (minutes long), the build's
current phase and the time since it started::

    ⠼ building debian:12: rootfs: mmdebstrap minbase bookworm + 12 packages 0:01:12

``--json`` and ``-q`` show none of it (warnings still show unless ``--json``).
``pyro run``, ``apply`` and ``demo`` show a build's live line too (:class:`Live`), on a
terminal only: their marker lines stay as they were.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyro.cli.output import quiet
from pyro.cli.terminal import echo, for_terminal, is_tty

if TYPE_CHECKING:
    from pyro.environments.status import ProgressEvent

Report = Callable[["ProgressEvent"], None]


class Live:
    """The one live display at the bottom of a terminal: transfer bars or the build line.

    rich shows one live display per console at a time, so switching from one kind to
    the other stops the first.
    """

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._kind: str | None = None
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def _switch(self, kind: str) -> Any:
        if self._kind == kind:
            return self._progress
        self.stop()
        from rich.progress import (
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        if kind == "transfer":
            columns: tuple[Any, ...] = (
                *Progress.get_default_columns(),
                DownloadColumn(),
                TransferSpeedColumn(),
            )
        else:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        self._progress = Progress(*columns, console=self.console, transient=True)
        self._progress.start()
        self._kind = kind
        return self._progress

    def transfer(self, what: str, done: int, total: int) -> None:
        progress = self._switch("transfer")
        if what not in self._tasks:
            self._tasks[what] = progress.add_task(for_terminal(what), total=total)
        progress.update(self._tasks[what], completed=done)

    def build(self, environment: str, message: str) -> None:
        progress = self._switch("build")
        phase = message.removeprefix(f"building {environment} ")
        text = for_terminal(f"building {environment}: {phase}")
        if "build" not in self._tasks:
            self._tasks["build"] = progress.add_task(text, total=None)
        progress.update(self._tasks["build"], description=text)

    def say(self, line: str) -> None:
        """A line above the live display (it scrolls, the display stays at the bottom)."""
        self.console.print(for_terminal(line), markup=False, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._kind, self._tasks = None, None, {}


@contextmanager
def progress_reporter(verb: str, as_json: bool) -> Iterator[Report | None]:
    """A progress callback for ``pyro env pull|build|push``: see the module docstring."""
    if as_json:
        yield None
        return
    live = Live() if is_tty(sys.stderr) and not quiet() else None

    def say(line: str, *, always: bool = False) -> None:
        if quiet() and not always:
            return
        if live is not None:
            live.say(line)
        else:
            echo(line, err=True)

    def report(event: ProgressEvent) -> None:
        if event.phase in ("download", "upload"):
            if live is not None:
                live.transfer(event.message, event.done, event.total)
            return
        if event.phase == "build":
            say(f"[{verb}] {event.message}")
            if live is not None:
                live.build(event.environment, event.message)
            return
        if event.phase == "warning":
            say(f"[{verb}] warning: {event.message}", always=True)
            return
        if event.phase == "ready" and live is not None:
            live.stop()  # the work is done: its live line goes
        say(f"[{verb}] phase={event.phase} environment={event.environment}")

    try:
        yield report
    finally:
        if live is not None:
            live.stop()
