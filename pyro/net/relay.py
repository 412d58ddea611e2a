"""Relay one guest connection to one allowed destination (run by QEMU's slirp per connection).

QEMU's ``guestfwd=tcp:ADDR:PORT-cmd:…`` starts this program for every TCP connection the
guest opens to ``ADDR:PORT``, with the connection on stdin/stdout/stderr. It connects to
the destination given on its command line and copies bytes both ways until both sides are
done, or until the VM's QEMU exits.

**Lifetime.** glib starts the relay through an intermediate child that exits at once, so
its parent is init, not QEMU, and ``PR_SET_PDEATHSIG`` cannot tie it to the VM. The relay
finds its QEMU instead: QEMU's pidfile ``vmm.pid`` in the relay's working directory (QEMU's,
the VM's folder), checked by the ``pyro-<vm id>`` tag in that process's command line, and
watched through a pidfd. When QEMU exits, the relay exits, whatever the destination does.
Relays left anyway (a relay still resolving or connecting) are killed by
:func:`kill_relays` when the VM is killed or reaped (:meth:`pyro.vmm.qemu.QemuBackend.kill`).

**Destinations.** A destination is what the allowlist named: an IPv4 address in any form
``inet_aton`` accepts (``127.1``, ``2130706433``, ``0x7f.1``, normalised by
:func:`ipv4_literal` when the plan is made), connected to as it is; or a name, resolved
here, at connection time, and every address checked again (:func:`special_reason`): a name
never leads to a loopback, link-local or cloud metadata address (DNS rebinding, or a name
pointing at the host itself). To allow such an address, name the address.

**Quiet.** The relay's stderr is the guest's connection: nothing it says may go there.
Its messages go to QEMU's ``vmm.log`` in the same folder.

Standard library only and started with ``python3 -I``: it must start fast and must not
depend on pyro being importable (it runs as a child of QEMU, outside pyro's process).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import sys

# Not from typing at run time: the relay starts once per guest connection (see above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    Resolver: TypeAlias = Callable[..., list[tuple[Any, ...]]]

CHUNK = 1 << 16
RELAY_USAGE_EXIT = 2
#: The VMM's ``-name`` is ``pyro-<vm id>``; relays carry the same tag as their first argument.
TAG_PREFIX = "pyro-"
PIDFILE = "vmm.pid"
LOG = "vmm.log"
CONNECT_TIMEOUT_S = 10.0
#: Cloud instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba).
METADATA = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
_IPV4_CHARS = frozenset("0123456789abcdefx.")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


class Refused(Exception):
    """The destination may not be reached (its reason is the message)."""


def ipv4_literal(host: str) -> str | None:
    """``host`` as a dotted IPv4 address when ``inet_aton`` (so ``connect``, through
    ``getaddrinfo``) reads it as one — ``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``
    are all ``127.0.0.1`` — else None (a name)."""
    text = host.strip().lower()
    if not text or not set(text) <= _IPV4_CHARS:
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        return None


def special_reason(address: str) -> str | None:
    """Why a name may not lead to ``address`` (None when it may): loopback and "this host"
    (``0.0.0.0/8``, ``::``), link-local, or a cloud metadata service; an IPv4-mapped IPv6
    address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "this host's unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    return None


def destinations(
    host: str, port: int, *, resolve: Resolver = socket.getaddrinfo
) -> list[tuple[Any, ...]]:
    """The ``getaddrinfo`` entries the relay may connect to for ``host``: an IP literal
    (the allowlist named it) as it is; a name's addresses now, without the special ones.

    Raises:
        Refused: every address of the name is special.
        OSError: the name does not resolve.
    """
    literal = ipv4_literal(host)
    if literal is not None:
        return [(socket.AF_INET, socket.SOCK_STREAM, 0, "", (literal, port))]
    infos = resolve(host, port, type=socket.SOCK_STREAM)
    allowed = [info for info in infos if special_reason(str(info[4][0])) is None]
    if not allowed:
        seen = sorted({str(info[4][0]) for info in infos})
        reasons = "; ".join(f"{addr} is {special_reason(addr)}" for addr in seen)
        raise Refused(
            f"{host} resolves only to addresses a name may not lead to ({reasons}); "
            "to allow one, name that address in the allowlist"
        )
    return allowed


def connect(host: str, port: int, *, resolve: Resolver = socket.getaddrinfo) -> socket.socket:
    """A connection to the first address of :func:`destinations` that answers; the
    address checked is the address connected to (no second lookup).

    Raises:
        Refused: see :func:`destinations`.
        OSError: no address could be reached.
    """
    last: OSError | None = None
    for family, kind, proto, _, address in destinations(host, port, resolve=resolve):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(address)
            sock.settimeout(None)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"{host} has no address")


def watch_vmm(tag: str, *, directory: str = ".") -> int:
    """A pidfd of the VMM whose command line carries ``tag``, found through its pidfile
    in ``directory``.

    Raises:
        LookupError: no such VMM runs (the VM is gone, or the pidfile names another process).
        OSError: the pidfile or the process cannot be read.
    """
    with open(os.path.join(directory, PIDFILE), encoding="ascii") as f:
        text = f.read().strip()
    if not text.isdigit():
        raise LookupError(f"{PIDFILE} holds no PID")
    pid = int(text)
    fd = os.pidfd_open(pid)
    try:
        # Read after the pidfd is open: the PID cannot be reused while we hold it.
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        if tag.encode() not in args:
            raise LookupError(f"process {pid} is not the VMM {tag}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def relay(guest: socket.socket, target: socket.socket, stop: int | None = None) -> None:
    """Copy bytes both ways; half-close each direction when its reader sees EOF. Return
    when both directions are done, or at once when ``stop`` (a pidfd) becomes readable."""
    sel = selectors.DefaultSelector()
    peers = {guest: target, target: guest}
    for sock in peers:
        sel.register(sock, selectors.EVENT_READ)
    if stop is not None:
        sel.register(stop, selectors.EVENT_READ)
    open_reads = 2
    while open_reads:
        for key, _ in sel.select():
            if key.fileobj == stop:
                return  # the VMM exited: nobody is left on the guest's side
            src: socket.socket = key.fileobj  # type: ignore[assignment]
            dst = peers[src]
            try:
                data = src.recv(CHUNK)
            except OSError:
                data = b""
            if data:
                try:
                    dst.sendall(data)
                    continue
                except OSError:
                    return
            sel.unregister(src)
            open_reads -= 1
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def _quiet() -> None:
    """Point stdout and stderr (the guest's connection) at ``vmm.log``, else /dev/null."""
    try:
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _say(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"pyro relay: {message}\n".encode(errors="replace"))


def main(argv: list[str]) -> int:
    """``relay.py pyro-VMID HOST PORT``: 2 on bad arguments, 1 when the VM is gone or the
    destination is refused or unreachable."""
    _quiet()
    if len(argv) != 4 or not argv[1].startswith(TAG_PREFIX) or not argv[3].isdigit():
        _say("usage: relay.py pyro-VMID HOST PORT")
        return RELAY_USAGE_EXIT
    tag, host, port = argv[1], argv[2], int(argv[3])
    try:
        vmm = watch_vmm(tag)
    except (OSError, LookupError) as exc:
        _say(f"{tag} is not running here ({exc}); not connecting to {host}:{port}")
        return 1
    guest = socket.socket(fileno=os.dup(0))
    try:
        target = connect(host, port)
    except Refused as exc:
        _say(f"refused {host}:{port}: {exc}")
        return 1
    except OSError as exc:
        _say(f"cannot connect to {host}:{port}: {exc}")
        return 1
    relay(guest, target, vmm)
    return 0


def relay_pids(vm_id: str, *, script: str = "relay.py", proc: str = "/proc") -> list[int]:
    """PIDs of the relays running for VM ``vm_id`` (found by their command line)."""
    tag = f"{TAG_PREFIX}{vm_id}".encode()
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        for index, arg in enumerate(args[:-1]):
            if arg.endswith(script.encode()) and args[index + 1] == tag:
                found.append(int(name))
                break
    return found


def kill_relays(vm_id: str) -> list[int]:
    """SIGKILL every relay still running for VM ``vm_id`` (a relay watches its VMM and ends
    with it; this is for one caught resolving or connecting). Returns the PIDs killed."""
    import signal

    killed = []
    tag = f"{TAG_PREFIX}{vm_id}".encode()
    for pid in relay_pids(vm_id):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if tag not in f.read().split(b"\0"):  # the PID was reused meanwhile
                    continue
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            continue
        finally:
            os.close(fd)
    return killed


def main_entry(argv: Sequence[str]) -> int:
    """:func:`main`, with any unexpected error written to the log, never to the guest."""
    try:
        return main(list(argv))
    except Exception as exc:  # a traceback on stderr would reach the guest's connection
        _say(f"failed: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main_entry(sys.argv))
