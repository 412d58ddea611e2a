"""A scriptable, lying OCI registry on 127.0.0.1 for hostile-registry tests.

Real registries (tests/helpers/registry.py) follow the protocol; this one serves whatever
a test scripts: endless or trickling bodies, blobs longer than declared, huge declared
sizes, credential challenges. It records every request with its Authorization header and
how many body bytes each streamed answer managed to send before the client hung up.

Streamed answers are bounded too (``limit`` bytes, ``seconds``), so a test run against old
code that never hangs up still ends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

Route = Callable[[http.server.BaseHTTPRequestHandler], None]

ARTIFACT_TYPE = "application/vnd.pyro.environment.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.pyro.environment.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Streamed:
    """What one streamed answer did: bytes sent, and whether the client hung up first."""

    sent: int = 0
    cut: bool = False
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def finished(self) -> Streamed:
        """Wait (up to 30 s) until the answer has ended, then return it."""
        self.done.wait(30)
        return self


@dataclass
class FakeRegistry:
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    streamed: list[Streamed] = field(default_factory=list)
    basic: tuple[str, str] | None = None
    """When set, every request without these credentials gets a Basic challenge."""
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ref(self, repository: str = "pyro/x", tag: str = "1") -> str:
        return f"oci://{self.address}/{repository}:{tag}"

    def authorizations(self) -> list[str]:
        return [s.authorization for s in self.seen if s.authorization]

    def blob_requests(self) -> list[Seen]:
        return [s for s in self.seen if "/blobs/" in s.path]

    # -- scripting -----------------------------------------------------------------------

    def serve_artifact(
        self, manifest: bytes, blobs: dict[str, bytes], repo: str = "pyro/x"
    ) -> None:
        """Serve a manifest under tag 1 and each blob, as a well-behaved registry would."""
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.routes["GET", f"/v2/{repo}/manifests/1"] = reply(
            200, manifest, {"Docker-Content-Digest": digest, "Content-Type": MANIFEST_MEDIA_TYPE}
        )
        for blob_digest, data in blobs.items():
            self.routes["GET", f"/v2/{repo}/blobs/{blob_digest}"] = reply(200, data)

    def stream(
        self,
        chunk: bytes,
        *,
        limit: int,
        delay: float = 0.0,
        seconds: float = 30.0,
        headers: dict[str, str] | None = None,
        code: int = 200,
    ) -> Route:
        """An answer that sends ``chunk`` again and again (``delay`` apart), without a
        Content-Length, until the client hangs up, ``limit`` bytes or ``seconds`` pass."""

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            record = Streamed()
            self.streamed.append(record)
            h.send_response(code)
            for key, value in (headers or {}).items():
                h.send_header(key, value)
            h.end_headers()
            deadline = time.monotonic() + seconds
            try:
                while record.sent < limit and time.monotonic() < deadline:
                    piece = chunk[: limit - record.sent]
                    h.wfile.write(piece)
                    h.wfile.flush()
                    record.sent += len(piece)
                    if delay:
                        time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                record.cut = True
            finally:
                record.done.set()

        return route


def reply(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                h.wfile.write(body)

    return route


@contextlib.contextmanager
def fake_registry() -> Iterator[FakeRegistry]:
    """Run a :class:`FakeRegistry` on a free loopback port; stopped on exit."""
    state = FakeRegistry()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            auth = self.headers.get("Authorization")
            path = self.path.split("?", 1)[0]
            state.seen.append(Seen(self.command, path, auth))
            if state.basic is not None:
                wanted = "Basic " + base64.b64encode(":".join(state.basic).encode()).decode()
                if auth != wanted:
                    reply(401, b"", {"WWW-Authenticate": 'Basic realm="fake"'})(self)
                    return
            route = state.routes.get((self.command, path))
            if route is None:
                route = state.routes.get((self.command, "*"), reply(404))
            route(self)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- a pyro environment artifact, built in memory ------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def artifact(
    kernel: bytes = b"kernel " * 100,
    rootfs: bytes = b"rootfs " * 100,
    *,
    name: str = "x:1",
    change: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[bytes, dict[str, str], dict[str, bytes]]:
    """(manifest bytes, {role: layer digest}, {digest: blob}) of a pyro environment.

    ``change`` may edit the manifest document (e.g. lie about a size) before it is encoded.
    """
    config = json.dumps({"name": name, "version": "1.0.0"}).encode()
    blobs = {sha256(config): config}
    layers = []
    roles = {}
    for role, file, media, data in (
        ("kernel", "vmlinux", "application/vnd.pyro.kernel.v1+zstd", kernel),
        ("rootfs", "rootfs.ext4", "application/vnd.pyro.rootfs.ext4.v1+zstd", rootfs),
    ):
        packed = zstandard.ZstdCompressor().compress(data)
        blobs[sha256(packed)] = packed
        roles[role] = sha256(packed)
        layers.append(
            {
                "mediaType": media,
                "digest": sha256(packed),
                "size": len(packed),
                "annotations": {
                    "org.opencontainers.image.title": file,
                    "dev.pyro.role": role,
                    "dev.pyro.uncompressed.digest": sha256(data),
                    "dev.pyro.uncompressed.size": str(len(data)),
                },
            }
        )
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256(config), "size": len(config)},
        "layers": layers,
    }
    if change is not None:
        change(document)
    return json.dumps(document).encode(), roles, blobs
