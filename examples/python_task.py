"""A task keeps one VM across commands: what one command writes, the next one sees.

    python examples/python_task.py [ENVIRONMENT]

Use a task when work needs state (install, then build, then test); delete it when done.
For a single command, ``run_in_vm`` is simpler and cleans up by itself.
"""

from __future__ import annotations

import sys

from pyro import Pyro
from pyro.errors import PyroError


def main(environment: str = "debian:12") -> int:
    pyro = Pyro()
    try:
        task = pyro.create_task(environment, name="example")
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    print(f"task {task.id} state={task.state} workspace={task.workspace}")
    try:
        first = pyro.exec_task(task.id, "echo 'state survives' > note.txt && ls")
        second = pyro.exec_task(task.id, "cat note.txt")
        print(f"first: exit_code={first.exit_code} stdout={first.stdout.strip()!r}")
        print(f"second: exit_code={second.exit_code} stdout={second.stdout.strip()!r}")
        logs = pyro.logs_task(task.id)
        print(f"journal: {len(logs.entries)} commands")
        return second.exit_code
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    finally:
        pyro.delete_task(task.id)
        print(f"deleted {task.id}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
