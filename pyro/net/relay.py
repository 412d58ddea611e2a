"""Relay one guest connection to one allowed destination (run by QEMU's slirp per connection).

QEMU's ``guestfwd=tcp:ADDR:PORT-cmd:…`` starts this program for every TCP connection the
guest opens to ``ADDR:PORT``, with the connection on stdin/stdout. It connects to the
destination given on its command line and copies bytes both ways until both sides are done.

Standard library only and started with ``python3 -I``: it must start fast and must not
depend on pyro being importable (it runs as a child of QEMU, outside pyro's process).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys

CHUNK = 1 << 16
RELAY_USAGE_EXIT = 2


def relay(guest: socket.socket, target: socket.socket) -> None:
    """Copy bytes both ways; half-close each direction when its reader sees EOF."""
    sel = selectors.DefaultSelector()
    peers = {guest: target, target: guest}
    for sock in peers:
        sel.register(sock, selectors.EVENT_READ)
    open_reads = 2
    while open_reads:
        for key, _ in sel.select():
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


def main(argv: list[str]) -> int:
    """``relay.py HOST PORT``: exit status 2 on bad arguments, 1 when the connect fails."""
    if len(argv) != 3 or not argv[2].isdigit():
        sys.stderr.write("usage: relay.py HOST PORT\n")
        return RELAY_USAGE_EXIT
    guest = socket.socket(fileno=os.dup(0))
    try:
        target = socket.create_connection((argv[1], int(argv[2])), timeout=10)
    except OSError as exc:
        sys.stderr.write(f"pyro relay: cannot connect to {argv[1]}:{argv[2]}: {exc}\n")
        return 1
    target.settimeout(None)
    relay(guest, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
