"""What this host can run: CPU/KVM facts and which VMM backends are usable.

Runs on every ``pyro plan``, so it must be cheap (its budget: docs/performance.md): VMM
versions are cached per process and on disk, keyed by the binary's path, size and mtime,
so ``--version`` runs once per installed binary, not once per command.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from functools import cache
from pathlib import Path

from pyro.paths import cache_dir
from pyro.plan.inventory import BackendInfo, HostInfo, KvmKind

DEV_KVM = Path("/dev/kvm")
CPUINFO = Path("/proc/cpuinfo")
SYS_MODULE = Path("/sys/module")

PVM_REASON = (
    "/dev/kvm is PVM (kvm_pvm, no vmx/svm): a stock guest kernel boots but its user space "
    "faults on the first syscall, so commands cannot run"
)


def detect_kvm(
    *, dev_kvm: Path = DEV_KVM, cpuinfo: Path = CPUINFO, sys_module: Path = SYS_MODULE
) -> KvmKind:
    """``hardware`` (vmx/svm KVM), ``pvm`` (KVM without hardware virtualization) or ``none``."""
    if not dev_kvm.exists():
        return "none"
    if (sys_module / "kvm_pvm").exists():
        return "pvm"
    try:
        flags = _cpu_flags(cpuinfo.read_text())
    except OSError:
        return "hardware"
    return "hardware" if flags & {"vmx", "svm"} else "pvm"


def _cpu_flags(cpuinfo_text: str) -> set[str]:
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def kvm_accessible(dev_kvm: Path = DEV_KVM) -> bool:
    """True when this user may open ``/dev/kvm`` read-write."""
    return os.access(dev_kvm, os.R_OK | os.W_OK)


def probe_host() -> HostInfo:
    """Architecture, CPU count, memory and KVM kind of this host."""
    return HostInfo(
        arch=platform.machine(),
        cpus=os.cpu_count() or 1,
        memory_mib=host_memory_mib(),
        kvm=detect_kvm(),
    )


def host_memory_mib() -> int:
    """This host's physical memory in MiB (what psutil reports as total, without its import)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


def find_binary(name: str, env_var: str | None = None) -> Path | None:
    """``$env_var`` if set, else ``name`` on PATH; None when absent or not executable."""
    explicit = os.environ.get(env_var) if env_var else None
    candidate = explicit or shutil.which(name)
    if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
        return Path(candidate).absolute()
    return None


def binary_version(path: Path) -> str | None:
    """First line of ``path --version``; cached in memory and in the cache dir."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _version(str(path), stat.st_size, stat.st_mtime_ns)


@cache
def _version(path: str, size: int, mtime_ns: int) -> str | None:
    key = f"{path}:{size}:{mtime_ns}"
    store = cache_dir() / "probe" / "versions.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return str(known[key])
    import subprocess  # only when the version is not cached yet

    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = next((ln.strip() for ln in out.stdout.splitlines() if ln.strip()), "")
    version = _short_version(line)
    if version is None:
        return None
    known = known if isinstance(known, dict) else {}
    known[key] = version
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, sort_keys=True))
        os.replace(tmp, store)
    except OSError:
        pass  # a read-only cache only costs the next process one --version call
    return version


def _short_version(line: str) -> str | None:
    # "QEMU emulator version 7.2.22 (Debian ...)" -> "7.2.22"; "Firecracker v1.12.1" -> "1.12.1"
    for word in line.split():
        word = word.removeprefix("v")
        if word[:1].isdigit() and "." in word:
            return word
    return line or None


def find_firecracker() -> Path | None:
    """The firecracker binary: ``$PYRO_FIRECRACKER``, else ``firecracker`` on PATH."""
    return find_binary("firecracker", "PYRO_FIRECRACKER")


def probe_backends(kvm: KvmKind | None = None) -> list[BackendInfo]:
    """Every backend in selection order (firecracker, qemu-kvm, qemu-tcg), usable or not."""
    kind = detect_kvm() if kvm is None else kvm
    qemu = find_binary("qemu-system-x86_64")
    firecracker = find_firecracker()
    qemu_version = binary_version(qemu) if qemu else None
    return [
        _kvm_backend(
            "firecracker",
            firecracker,
            binary_version(firecracker) if firecracker else None,
            kind,
            missing="firecracker binary not found (set PYRO_FIRECRACKER or put it on PATH)",
        ),
        _kvm_backend(
            "qemu-kvm",
            qemu,
            qemu_version,
            kind,
            missing="qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
        ),
        BackendInfo(
            name="qemu-tcg",
            usable=qemu is not None,
            version=qemu_version,
            reason="" if qemu else "qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
        ),
    ]


def _kvm_backend(
    name: str, binary: Path | None, version: str | None, kind: KvmKind, *, missing: str
) -> BackendInfo:
    reason = ""
    if binary is None:
        reason = missing
    elif kind == "none":
        reason = "/dev/kvm is missing (no KVM on this host)"
    elif kind == "pvm":
        reason = PVM_REASON
    elif not kvm_accessible():
        reason = "/dev/kvm is not accessible to this user (add it to the 'kvm' group)"
    return BackendInfo(
        name=name,
        usable=not reason,
        version=version,
        reason=reason,
        can_exec=kind == "hardware",
    )
