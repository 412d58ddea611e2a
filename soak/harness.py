"""What every soak scenario needs: running ``pyro`` as a child, and counting what it left behind.

A leak is anything a dead or finished pyro process should not have left after the next pyro
command ran: a VMM process working in our private state dir that no live VM record owns (or
one of its helpers: a console keeper, an allowlist relay), a
VM directory (overlay, sockets) without a live record, an ephemeral record whose owner is
gone, work dirs under the cache's ``tmp/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYRO = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pyro.cli"]


@dataclass
class Soak:
    """Private dirs and the environment every pyro child gets; counters for the table."""

    work: Path
    base_env: dict[str, str]
    tracebacks: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.work / "state"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(self.base_env, PYRO_STATE_DIR=str(self.state))
        env.update(extra)
        return env

    def pyro(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run pyro to the end; record any traceback it printed."""
        proc = subprocess.run(
            [*PYRO, *args],
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
        )
        self.scan(args, proc.returncode, proc.stdout + proc.stderr)
        return proc

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*PYRO, *args],
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.work,
            start_new_session=True,
        )

    def scan(self, args: tuple[str, ...] | list[str], code: int, text: str) -> None:
        # A bug exits 3, or 125 ("internal error: ...") from a command whose exit code is its
        # guest's (run, apply, vm exec, task exec), where a 3 may be the guest's own.
        from pyro.cli.errors import PASSTHROUGH

        words = tuple(w for w in args if not w.startswith("-"))
        passthrough = any(words[: len(names)] == names for names in PASSTHROUGH)
        bug = "internal error:" in text or (code == 3 and not passthrough)
        if "Traceback (most recent call last)" in text or bug:
            self.tracebacks.append(f"pyro {' '.join(args)} (exit {code}): {text[-1500:]}")

    def crash_logs(self) -> list[Path]:
        found: list[Path] = []
        for root in (self.state, *self.work.glob("*cache*")):
            found += sorted((root / "logs").glob("crash-*"))
        return found


def kill_after(proc: subprocess.Popen[str], delay: float) -> tuple[int | None, str]:
    """SIGKILL ``proc`` (pyro only, not its group) after ``delay`` s unless it ended first."""
    try:
        proc.wait(delay)
        killed = None
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        killed = signal.SIGKILL
    _, err = proc.communicate(timeout=30)
    return (None if killed else proc.returncode), err


def vmm_processes(state: Path) -> dict[str, int]:
    """VMM processes working in a VM directory under ``state``: vm id → pid."""
    found: dict[str, int] = {}
    vms = str(state / "vms")
    for proc in psutil.process_iter(["name", "pid"]):
        name = proc.info["name"] or ""
        if not (name.startswith("qemu-system") or name.startswith("firecracker")):
            continue
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd.startswith(vms + "/") and proc.status() != psutil.STATUS_ZOMBIE:
            found[Path(cwd).name] = proc.info["pid"]
    return found


def helper_processes(state: Path) -> list[tuple[str, str, int]]:
    """Console keepers and allowlist relays of VMs under ``state``: (kind, vm id, pid).
    Both run in (relays) or write to (keepers) the VM's directory."""
    found = []
    vms = str(state / "vms") + "/"
    for proc in psutil.process_iter(["cmdline", "pid"]):
        args = proc.info["cmdline"] or []
        try:
            if any(a.endswith("console.py") for a in args):
                where = next((a for a in args if a.startswith(vms)), "")
                kind = "console keeper"
            elif any(a.endswith("relay.py") for a in args):
                where, kind = proc.cwd() + "/", "relay"
            else:
                continue
            if where.startswith(vms) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((kind, where[len(vms) :].split("/", 1)[0], proc.info["pid"]))
        except (psutil.Error, OSError):
            continue
    return found


def find_leaks(state: Path, cache: Path | None = None) -> list[str]:
    """What is left behind (see the module doc); empty when clean."""
    from pyro.errors import PyroError
    from pyro.machines.record import VMState
    from pyro.process.identity import process_alive as _process_alive
    from pyro.machines.registry import VMRegistry

    registry = VMRegistry(state)
    leaks: list[str] = []
    live: set[str] = set()
    vms_dir = state / "vms"
    for child in sorted(vms_dir.iterdir()) if vms_dir.is_dir() else []:
        try:
            record = registry.get(child.name)
        except PyroError:
            leaks.append(f"VM dir without a readable record: {child}")
            continue
        if record.ephemeral and not _process_alive(record.owner_pid, record.owner_started):
            leaks.append(f"stale registry entry: ephemeral VM {record.id} of a dead owner")
        if record.state is VMState.RUNNING:
            live.add(record.id)
            continue
        for pattern in ("*.sock", "*.pid"):
            leaks += [f"leftover {p.name} of stopped VM {record.id}" for p in child.glob(pattern)]
        if record.ephemeral:
            leaks += [f"overlay of dead ephemeral VM: {p}" for p in child.glob("*.qcow2")]
    for vm_id, pid in vmm_processes(state).items():
        if vm_id not in live:
            leaks.append(f"VMM process {pid} for VM {vm_id} that no live record owns")
    for kind, vm_id, pid in helper_processes(state):
        if vm_id not in live:
            leaks.append(f"{kind} process {pid} for VM {vm_id} that no live record owns")
    if cache is not None and (cache / "tmp").is_dir():
        leaks += [f"cache work dir left: {p}" for p in (cache / "tmp").iterdir()]
    return leaks


def wait_gone(state: Path, timeout: float = 10.0) -> None:
    """VMMs killed by PDEATHSIG die asynchronously; give them a moment before counting.

    VMMs of VMs recorded as running (a task kept across injections) are expected to stay.
    """
    from pyro.machines.record import VMState
    from pyro.machines.registry import VMRegistry

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {r.id for r in VMRegistry(state).list() if r.state is VMState.RUNNING}
        if not set(vmm_processes(state)) - live:
            return
        time.sleep(0.2)


def peak_rss_mib(proc: subprocess.Popen[str]) -> float:
    """Poll a running child's RSS until it exits; the peak in MiB."""
    peak = 0
    try:
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.05)
    except psutil.Error:
        pass
    return peak / (1 << 20)
