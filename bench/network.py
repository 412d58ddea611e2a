"""Network throughput figures for bench/run.py (QEMU user-mode networking, policy egress).

* ``net_host_to_guest_mbps``  the host downloads a 16 MiB HTTP body from a server in the
  guest through a published port (127.0.0.1:H → guest:8000), MB/s per download
* ``net_guest_to_host_mbps``  the guest downloads a 16 MiB HTTP body from a server on the
  host's 127.0.0.1 (reached at 10.0.2.2), MB/s per download, timed inside the guest
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

SIZE = 16 << 20
GUEST_PORT = 8000
GUEST_SERVER = (
    "use IO::Socket::INET; $d = 'x' x $ARGV[1]; $s = IO::Socket::INET->new(LocalPort => "
    '$ARGV[0], Listen => 8, ReuseAddr => 1) or die "listen: $!"; open(F, ">/tmp/ready"); '
    "close F; while ($c = $s->accept) { while (<$c>) { last if /^\\r?$/ } "
    'print $c "HTTP/1.0 200 OK\\r\\nContent-Length: " . length($d) . "\\r\\n\\r\\n" . $d; '
    "close $c }"
)
GUEST_GET = (
    's=$(date +%s%N); exec 3<>"/dev/tcp/10.0.2.2/$0" || exit 7; '
    'printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; n=$(cat <&3 | wc -c); e=$(date +%s%N); '
    'echo "$n $((e - s))"'
)


class _Body(http.server.BaseHTTPRequestHandler):
    body = b"y" * SIZE

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def egress_throughput(install: Any, initrd: Path, runs: int) -> dict[str, list[float]]:
    """MB/s samples both ways through one VM with policy egress and one published port."""
    from pyro.machines.registry import VMRegistry

    host_port = _free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry = VMRegistry()
    record = registry.create(
        environment=install.name,
        environment_digest=install.digest,
        kernel=install.kernel,
        initrd=initrd,
        rootfs=install.rootfs,
        backend="qemu-tcg",
        vcpus=1,
        memory_mib=512,
        ephemeral=True,
        network={"policy": "egress", "publish": [{"host": host_port, "guest": GUEST_PORT}]},
    )
    inbound: list[float] = []
    outbound: list[float] = []
    try:
        _, client = registry.start(record.id)
        with client:
            client.exec(
                ["setsid", "-f", "perl", "-e", GUEST_SERVER, str(GUEST_PORT), str(SIZE)],
                timeout_s=30,
            )
            wait = "for i in $(seq 300); do [ -e /tmp/ready ] && exit 0; sleep 0.1; done; exit 1"
            client.exec(["bash", "-c", wait], timeout_s=60)
            for _ in range(runs):
                begun = time.perf_counter()
                url = f"http://127.0.0.1:{host_port}/"
                with urllib.request.urlopen(url, timeout=120) as response:
                    size = len(response.read())
                inbound.append(size / (time.perf_counter() - begun) / 1e6)
            port = str(server.server_address[1])
            for _ in range(runs):
                result = client.exec(["bash", "-c", GUEST_GET, port], timeout_s=120)
                size_text, ns = result.stdout.decode().split()
                outbound.append(int(size_text) / (int(ns) / 1e9) / 1e6)
    finally:
        registry.delete(record.id)
        server.shutdown()
        server.server_close()
    return {"net_host_to_guest_mbps": inbound, "net_guest_to_host_mbps": outbound}
