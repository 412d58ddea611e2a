"""Run one command in a fresh microVM with the Python SDK, then print what it said.

    python examples/python_run.py [ENVIRONMENT]

``run_in_vm`` creates a VM, boots it, runs the command and deletes the VM again, also when
the command fails. The result reads like ``subprocess.run``'s (``exit_code``, ``stdout``,
``stderr``); a failing command is a result (``ok`` false), not an exception, unless
``check=True``. pyro's own problems (unknown environment, no backend) raise ``PyroError``.
"""

from __future__ import annotations

import sys

from pyro import Pyro, PyroError


def main(environment: str = "debian:12") -> int:
    try:
        result = Pyro().run_in_vm(environment, "uname -sr && git --version", timeout_seconds=300)
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    print(result.stdout, end="")
    print(f"exit_code={result.exit_code} backend={result.backend} vm_id={result.vm_id}")
    return result.exit_code or 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
