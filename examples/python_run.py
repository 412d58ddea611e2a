"""Run one command in a fresh microVM with the Python SDK, then print what it said.

    python examples/python_run.py [ENVIRONMENT]

``run_in_vm`` creates a VM, boots it, runs the command and deletes the VM again, also when
the command fails. A failing command is a result (``ok`` false, its exit code), not an
exception; pyro's own problems (unknown environment, no backend) raise ``PyroError``.
"""

from __future__ import annotations

import sys

from pyro import Pyro
from pyro.errors import PyroError


def main(environment: str = "debian:12") -> int:
    try:
        result = Pyro().run_in_vm(environment, "uname -sr && git --version", timeout_seconds=300)
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    step = result.exec_steps()[0]
    print(step.stdout, end="")
    print(f"exit_code={result.exit_code} backend={result.backend} vm_id={result.vm_id}")
    return result.exit_code or 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
