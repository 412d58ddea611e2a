"""Drive one VM by hand: create, start, check its status, run a command — and see it go.

    python examples/python_lifecycle.py [ENVIRONMENT]

``exec_vm`` runs ONE command and then deletes the VM, also when the command fails, so a VM
cannot be leaked by a forgotten cleanup. To run several commands in one VM, use a task
(see python_task.py); for one command, ``run_in_vm`` does all of this in a single call.
"""

from __future__ import annotations

import sys

from pyro import Pyro
from pyro.errors import NotFoundError, PyroError


def main(environment: str = "debian:12") -> int:
    pyro = Pyro()
    try:
        vm = pyro.create_vm(environment, memory_mib=256)
    except PyroError as exc:
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    print(f"created {vm.id} state={vm.state}")
    try:
        vm = pyro.start_vm(vm.id)
        status = pyro.status_vm(vm.id)
        print(f"started {status.id} state={status.state} backend={status.backend}")
        output = pyro.exec_vm(vm.id, ["cat", "/etc/os-release"], timeout_seconds=60)
    except PyroError as exc:
        pyro.delete_vm(vm.id)  # exec_vm cleans up after itself; the steps before it do not
        print(f"error: {exc.summary}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    print(next(line for line in output.stdout.splitlines() if line.startswith("PRETTY_NAME")))
    print(f"exit_code={output.exit_code}")
    try:
        pyro.status_vm(vm.id)
    except NotFoundError:
        print(f"{vm.id} is gone: exec_vm deleted it")
        return output.exit_code
    print(f"unexpected: {vm.id} still exists", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
