"""Published ports: are the host ports free before the VM boots?"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from pyro.errors import NetworkError

LOOPBACK = "127.0.0.1"


def check_ports_free(host_ports: Iterable[int]) -> None:
    """Refuse to boot when a published host port on 127.0.0.1 is taken.

    Binding each port (with SO_REUSEADDR, as QEMU's hostfwd does) is the same test the
    VMM makes a moment later; a race with another process in between remains possible,
    and the VMM then fails to start with its own message.

    Raises:
        NetworkError: naming the first port in use (or that cannot be bound).
    """
    for port in host_ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NetworkError(
                    f"cannot publish guest port on {LOOPBACK}:{port}: the port is already in use",
                    f"choose another host port, or stop what listens on it "
                    f"(see 'ss -ltnp sport = :{port}')",
                ) from exc
            raise NetworkError(
                f"cannot publish guest port on {LOOPBACK}:{port}: {exc.strerror}",
                "ports below 1024 need root; choose a port from 1024 to 65535",
            ) from exc
        finally:
            sock.close()
