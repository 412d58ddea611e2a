"""Driving any VMM backend through the :class:`pyro.vmm.Backend` protocol in tests.

* ``test_kernel()`` — the guest kernel: ``$PYRO_TEST_KERNEL``, else the kernel of the
  installed debian:12 environment (``make environments`` installs it).
* ``tiny_initramfs(dir)`` — an initramfs whose static ``/init`` prints ``INIT_LINE`` to the
  console, then reboots (QEMU ``-no-reboot`` exits); given ``-- hang`` on the kernel
  command line it waits forever, given ``-- flood`` it writes to the console forever.
* ``VMFactory`` — owns every VM a test makes; ``cleanup()`` kills them idempotently and
  asserts that no VMM process, socket or disk is left.
* ``FakeBackend`` — a backend with no VMM for unit tests: it records each VM's
  :class:`VMConfig` and boots a ``WireAgent``, a Python guest agent that speaks the real
  wire protocol (hello, exec by a script) to pyro's own agent client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pyro.guest.protocol import (
    CHUNK_LEN,
    HEADER,
    HEADER_LEN,
    PROTOCOL_VERSION,
    Fields,
    FrameType,
    Tag,
    TlvValue,
    encode_frame,
    encode_tlv,
    iter_tlv,
)
from pyro.plan.inventory import BackendInfo
from pyro.vmm import Backend, VMConfig, VMHandle

INIT_LINE = "PYRO-TEST-INIT hello"
SOCKETS = ("agent.sock", "qmp.sock", "fc.sock", "vsock.sock")
DISKS = ("overlay.qcow2", "rootfs.ext4")

INIT_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/reboot.h>
int main(int argc, char **argv) {
    static const char line[] = "PYRO-TEST-INIT hello\n";
    int fd = open("/dev/console", O_WRONLY);
    write(fd >= 0 ? fd : 1, line, sizeof line - 1);
    if (argc > 1 && strcmp(argv[1], "hang") == 0)
        for (;;) pause();
    if (argc > 1 && strcmp(argv[1], "flood") == 0) {  /* a guest spamming its console */
        static char chunk[4096];
        memset(chunk, 'x', sizeof chunk - 1);
        chunk[sizeof chunk - 1] = '\n';
        for (;;) write(fd, chunk, sizeof chunk);
    }
    sync();
    reboot(RB_AUTOBOOT);  /* microvm without ACPI cannot power off; -no-reboot exits */
    for (;;) pause();
}
"""


def test_kernel() -> Path:
    """The guest kernel for VM tests; skips when there is none."""
    if os.environ.get("PYRO_TEST_KERNEL"):
        kernel = Path(os.environ["PYRO_TEST_KERNEL"])
        if not kernel.is_file():
            pytest.skip(f"PYRO_TEST_KERNEL names no file: {kernel}")
        return kernel
    from pyro.environments.cache.store import Cache

    install = Cache().lookup("debian:12")
    if install is None or not Path(install.kernel).is_file():
        pytest.skip("no guest kernel: run 'make environments' or set PYRO_TEST_KERNEL")
    return Path(install.kernel)


def tiny_initramfs(directory: Path) -> Path:
    """Build the test initramfs in ``directory``; skips without musl-gcc or cpio."""
    for tool in ("musl-gcc", "cpio"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install musl-tools cpio)")
    root = directory / "initramfs"
    (root / "dev").mkdir(parents=True, exist_ok=True)
    source = directory / "init.c"
    source.write_text(INIT_C)
    subprocess.run(
        ["musl-gcc", "-static", "-Os", "-o", str(root / "init"), str(source)], check=True
    )
    names = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    archive = directory / "init.cpio"
    with archive.open("wb") as out:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=names, stdout=out, check=True
        )
    return archive


test_kernel.__test__ = False  # type: ignore[attr-defined]


def base_disk(directory: Path, size_mib: int = 16) -> Path:
    """A sparse raw disk standing in for a cached base rootfs."""
    disk = directory / "base.ext4"
    with disk.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    return disk


def wait_for_serial(backend: Backend, handle: VMHandle, text: str, timeout: float) -> str:
    """Wait until ``text`` is in the serial log; return the log. Fails on timeout."""
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        path = backend.serial_log(handle)
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        time.sleep(0.02)
    pytest.fail(f"{text!r} not in serial log after {timeout} s; log tail:\n{log[-2000:]}")


def wait_gone(pid: int, timeout: float) -> bool:
    """True when no process ``pid`` exists (or only a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


class VMFactory:
    """Makes VMs for one test and guarantees they are all gone afterwards."""

    def __init__(self, backend: Backend, root: Path, kernel: Path, initrd: Path) -> None:
        self.backend = backend
        self.root = root
        self.kernel = kernel
        self.initrd = initrd
        self.rootfs = base_disk(root)
        self.handles: list[VMHandle] = []

    def config(self, vm_id: str, **changes: object) -> VMConfig:
        fields: dict[str, object] = {
            "vm_id": vm_id,
            "workdir": self.root / "vms" / vm_id,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "rootfs": self.rootfs,
            "vcpus": 1,
            "memory_mib": 128,
        }
        fields.update(changes)
        return VMConfig(**fields)  # type: ignore[arg-type]

    def spawn(self, vm_id: str, **changes: object) -> VMHandle:
        handle = self.backend.spawn(self.config(vm_id, **changes))
        self.handles.append(handle)
        return handle

    def cleanup(self) -> None:
        base_before = self.rootfs.stat().st_size
        for handle in self.handles:
            self.backend.kill(handle)
            self.backend.kill(handle)  # idempotent
            assert_nothing_left(self.backend, handle)
            for name in DISKS:
                (handle.workdir / name).unlink(missing_ok=True)
        assert self.rootfs.stat().st_size == base_before


def assert_nothing_left(backend: Backend, handle: VMHandle) -> None:
    """No VMM process or socket remains for ``handle``, nor the disk of an ephemeral VM.

    A persistent VM's disk stays for its next spawn; the factory removes it in cleanup.
    """
    from pyro.vmm.base import console_process

    assert not backend.is_alive(handle)
    assert wait_gone(handle.pid, 5.0), f"VMM pid {handle.pid} still running"
    assert console_process(handle) is None, "the console keeper outlived its VMM"
    names = SOCKETS + (DISKS if handle.ephemeral else ())
    left = [name for name in names if (handle.workdir / name).exists()]
    assert not left, f"left behind in {handle.workdir}: {left}"


# -- a backend without a VMM -------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """How the fake guest answers one exec: what it writes and how the command ends.

    ``honour_caps`` false: it sends all of ``stdout``/``stderr`` whatever the caps say (the
    host must trim and flag it)."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = 0
    signal: int | None = None
    timed_out: bool = False
    honour_caps: bool = True


@dataclass(frozen=True)
class Exec:
    """One exec as the fake guest received it."""

    vm_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout_ms: int | None
    stdout_cap: int | None
    stderr_cap: int | None


Script = Callable[[Exec], Reply]


class WireAgent:
    """A guest agent in a thread, speaking the real wire protocol over a socketpair: it
    answers the hello, runs every exec by ``script`` (default: exit 0, no output) and
    acknowledges a shutdown. Enough for pyro's own AgentClient to boot and exec."""

    def __init__(self, vm_id: str, sock: socket.socket, script: Script, execs: list[Exec]):
        self.vm_id = vm_id
        self.sock = sock
        self.script = script
        self.execs = execs
        self.thread = threading.Thread(target=self._serve, name=f"fake-agent-{vm_id}")
        self.thread.daemon = True
        self.thread.start()

    def _send(self, ftype: FrameType, request_id: int, items: list[tuple[Tag, TlvValue]]) -> None:
        self.sock.sendall(encode_frame(ftype, request_id, encode_tlv(items)))

    def _serve(self) -> None:
        # Any failure (or a script that raises) hangs up, as a crashing guest would.
        with contextlib.suppress(OSError, EOFError, struct.error), self.sock:
            while True:
                _, _, ftype, request_id, length = HEADER.unpack(self._read(HEADER_LEN))
                payload = self._read(length) if length else b""
                if ftype == FrameType.HELLO:
                    self._send(
                        FrameType.HELLO_OK,
                        request_id,
                        [(Tag.VERSION, PROTOCOL_VERSION), (Tag.AGENT_VERSION, "fake")],
                    )
                elif ftype == FrameType.EXEC:
                    self._exec(request_id, payload)
                elif ftype == FrameType.SHUTDOWN:
                    self._send(FrameType.OK, request_id, [])

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _exec(self, request_id: int, payload: bytes) -> None:
        items = list(iter_tlv(payload))
        fields = Fields(payload)
        env = dict(v.decode().split("=", 1) for t, v in items if t == Tag.ENV)
        cwd = fields.raw(Tag.CWD)
        call = Exec(
            vm_id=self.vm_id,
            argv=[v.decode() for t, v in items if t == Tag.ARG],
            env=env,
            cwd=None if cwd is None else cwd.decode(),
            timeout_ms=fields.int(Tag.TIMEOUT_MS),
            stdout_cap=fields.int(Tag.STDOUT_CAP),
            stderr_cap=fields.int(Tag.STDERR_CAP),
        )
        self.execs.append(call)
        reply = self.script(call)
        cut = {}
        for ftype, data, cap in (
            (FrameType.STDOUT, reply.stdout, call.stdout_cap),
            (FrameType.STDERR, reply.stderr, call.stderr_cap),
        ):
            kept = data[:cap] if reply.honour_caps and cap is not None else data
            cut[ftype] = len(kept) < len(data)
            for start in range(0, len(kept), CHUNK_LEN):
                self.sock.sendall(encode_frame(ftype, request_id, kept[start : start + CHUNK_LEN]))
        end: list[tuple[Tag, TlvValue]] = [
            (Tag.TIMED_OUT, reply.timed_out),
            (Tag.STDOUT_TRUNC, cut[FrameType.STDOUT]),
            (Tag.STDERR_TRUNC, cut[FrameType.STDERR]),
            (Tag.DURATION_US, 1000),
        ]
        if reply.exit_code is not None:
            end.append((Tag.EXIT_CODE, reply.exit_code))
        if reply.signal is not None:
            end.append((Tag.SIGNAL, reply.signal))
        self._send(FrameType.EXIT, request_id, end)


class FakeBackend:
    """A :class:`pyro.vmm.Backend` with no VMM: ``spawn`` records the :class:`VMConfig` it
    was given and "boots" a :class:`WireAgent`; ``connect_agent`` hands out a socket to it.
    Install it for ``get_backend('fake')`` with :meth:`install`."""

    name = "fake"

    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda call: Reply())
        self.configs: list[VMConfig] = []
        self.execs: list[Exec] = []
        self.running: set[str] = set()
        self.killed: list[str] = []
        self._agents: list[WireAgent] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
        """Make ``pyro.vmm.get_backend``/``select_backend`` answer this backend for 'fake'."""
        import pyro.vmm

        real = pyro.vmm.get_backend

        def get_backend(name: str) -> Backend:
            return self if name == self.name else real(name)  # type: ignore[return-value]

        monkeypatch.setattr(pyro.vmm, "get_backend", get_backend)
        monkeypatch.setattr(pyro.vmm, "select_backend", lambda requested=None, **kw: self)
        return self

    def probe(self) -> BackendInfo:
        return BackendInfo.model_construct(name=self.name, usable=True, version="0")

    def spawn(self, config: VMConfig) -> VMHandle:
        config.workdir.mkdir(parents=True, exist_ok=True)
        self.configs.append(config)
        self.running.add(config.vm_id)
        return VMHandle(
            vm_id=config.vm_id,
            backend=self.name,
            pid=os.getpid(),
            workdir=config.workdir,
            agent_endpoint="fake",
            started_at=time.time(),
            start_ticks=0.0,
            ephemeral=config.ephemeral,
        )

    def connect_agent(self, handle: VMHandle, *, timeout: float) -> socket.socket:
        from pyro.errors import BootError

        if handle.vm_id not in self.running:
            raise BootError(f"fake VM {handle.vm_id} is not running")
        host, guest = socket.socketpair()
        script: Script = lambda call: self.script(call)  # noqa: E731 - the script of the moment
        self._agents.append(WireAgent(handle.vm_id, guest, script, self.execs))
        return host

    def is_alive(self, handle: VMHandle) -> bool:
        return handle.vm_id in self.running

    def stop(self, handle: VMHandle, *, timeout: float) -> None:
        self.kill(handle)

    def kill(self, handle: VMHandle) -> None:
        if handle.vm_id in self.running:
            self.running.discard(handle.vm_id)
            self.killed.append(handle.vm_id)
        for agent in self._agents:
            if agent.vm_id == handle.vm_id:
                with contextlib.suppress(OSError):
                    agent.sock.close()

    def serial_log(self, handle: VMHandle) -> Path:
        return handle.workdir / "serial.log"
