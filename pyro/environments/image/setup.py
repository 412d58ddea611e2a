"""An image-based environment's ``setup``: run once as root in a real guest at build time.

The guest boots the environment being built (the catalog kernel, the agent initramfs,
the converted ``rootfs.ext4``) straight through the VMM adapter: it is the build's own
tool, like ``mke2fs``, not a VM anyone else sees, so it is not in the VM registry and its
VMM dies with this process (an ephemeral VMM). Its disk is a copy-on-write layer over the
staged image; once the command succeeds, the agent syncs and powers off, and the layer's
changes are written back into the staged image, which then becomes the environment. A
failure (non-zero exit, timeout, no ``/bin/sh``) is a :class:`BuildError` naming the
command, and the staged image is thrown away with the build's work dir.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyro.errors import BuildError, PyroError
from pyro.spec.environment import ImageSetup

BOOT_TIMEOUT_S = 120.0
POWER_OFF_TIMEOUT_S = 60.0
COMMIT_TIMEOUT_S = 1800.0
TAIL_LINES = 20
OUTPUT_CAP = 1 << 20

Log = Callable[[str], None]


class _Output:
    """The command's output as log lines, the last few kept for an error message."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.partial = {"out": b"", "err": b""}

    def feed(self, stream: str, data: bytes) -> None:
        *lines, self.partial[stream] = (self.partial[stream] + data).split(b"\n")
        for line in lines:
            self._say(line)

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._say(rest)
            self.partial[stream] = b""

    def _say(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")[:500]
        self.tail.append(text)
        self.log(f"setup: {text}")


def run_setup(
    setup: ImageSetup,
    staged: Path,
    work: Path,
    *,
    name: str,
    vcpus: int,
    memory_mib: int,
    cache_root: Path,
    log: Log,
) -> dict[str, Any]:
    """Boot ``staged`` (a folder with ``vmlinux`` and ``rootfs.ext4``), run ``setup.run``
    as root, power off and write the guest's disk back into ``staged/rootfs.ext4``.

    Returns what the install's metadata records about the run.

    Raises:
        BuildError: the guest does not boot, the command cannot start, exits non-zero or
            times out, or the disk cannot be written back.
        BackendUnavailableError: no VMM backend can run a guest here.
    """
    from pyro.guest.build import build_agent_initrd
    from pyro.guest.client import AgentClient
    from pyro.net.policy import NetworkConfig
    from pyro.vmm import select_backend
    from pyro.vmm.base import VMConfig, wait_exit

    backend = select_backend()
    vm_dir = work / "setup-vm"
    vm_dir.mkdir(mode=0o700)
    config = VMConfig(
        vm_id="setup" + secrets.token_hex(5),
        workdir=vm_dir,
        kernel=staged / "vmlinux",
        initrd=build_agent_initrd(cache_root),
        rootfs=staged / "rootfs.ext4",
        vcpus=vcpus,
        memory_mib=memory_mib,
        network=NetworkConfig.from_dict(setup.network.model_dump(mode="json")),
        ephemeral=True,
    )
    what = f"{name}: setup command {_short(setup.run)}"
    log(f"setup: booting a {backend.name} guest to run {_short(setup.run)}")
    started = time.monotonic()
    handle = backend.spawn(config)
    try:
        try:
            sock = backend.connect_agent(handle, timeout=BOOT_TIMEOUT_S)
            client = AgentClient.connect(sock, hello_timeout=BOOT_TIMEOUT_S)
        except PyroError as exc:
            raise BuildError(
                f"{name}: the setup guest did not boot: {exc.summary}",
                f"see its serial log {backend.serial_log(handle)} (kept until the build ends)",
            ) from exc
        output = _Output(log)
        with client:
            try:
                result = client.exec(
                    ["/bin/sh", "-c", setup.run],
                    uid=0,
                    gid=0,
                    timeout_s=setup.timeout_seconds,
                    stdout_cap=OUTPUT_CAP,
                    stderr_cap=OUTPUT_CAP,
                    on_stdout=lambda data: output.feed("out", data),
                    on_stderr=lambda data: output.feed("err", data),
                    sync=True,
                )
            except PyroError as exc:
                raise BuildError(
                    f"{what} could not run: {exc.summary}",
                    "setup runs with /bin/sh -c: the image needs a shell for it",
                ) from exc
            output.flush()
            _check(result.exit_code, result.signal, result.timed_out, setup, what, output)
            client.shutdown(timeout_s=30.0)
        if not wait_exit(handle, POWER_OFF_TIMEOUT_S):
            raise BuildError(f"{name}: the setup guest did not power off after the command")
        _write_back(vm_dir, staged / "rootfs.ext4")
    finally:
        backend.kill(handle)
    seconds = round(time.monotonic() - started, 1)
    log(f"setup: done in {seconds} s")
    return {"run": setup.run, "seconds": seconds, "network": setup.network.policy.value}


def _short(command: str) -> str:
    line = " ".join(command.split())
    return repr(line if len(line) <= 80 else line[:77] + "...")


def _check(
    code: int | None,
    signal: int | None,
    timed_out: bool,
    setup: ImageSetup,
    what: str,
    output: _Output,
) -> None:
    tail = "\n".join(output.tail)
    shown = f"\n--- its output (last lines) ---\n{tail}" if tail else ""
    hint = "fix the command (or the files it needs) and build again; nothing was installed"
    if timed_out:
        raise BuildError(
            f"{what} did not finish within {setup.timeout_seconds} s{shown}",
            "raise setup.timeoutSeconds, or make the command faster",
        )
    if signal:
        raise BuildError(f"{what} was killed by signal {signal}{shown}", hint)
    if code != 0:
        raise BuildError(f"{what} exited with code {code}{shown}", hint)


def _write_back(vm_dir: Path, rootfs: Path) -> None:
    """Make ``rootfs`` hold what the powered-off guest wrote to its disk."""
    from pyro.vmm.firecracker import DISK
    from pyro.vmm.qemu import OVERLAY

    overlay, copy = vm_dir / OVERLAY, vm_dir / DISK
    if copy.is_file():  # Firecracker: a whole copy of the image
        os.replace(copy, rootfs)
        return
    exe = shutil.which("qemu-img")
    if exe is None or not overlay.is_file():
        raise BuildError("cannot write the setup guest's disk back: qemu-img or its disk is gone")
    try:
        subprocess.run(
            [exe, "commit", "-q", str(overlay)],
            check=True,
            capture_output=True,
            timeout=COMMIT_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        raise BuildError(
            f"cannot write the setup guest's disk back into {rootfs}: "
            f"{lines[-1] if lines else exc}",
            "check free disk space in the cache",
        ) from exc
