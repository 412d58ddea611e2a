"""The oras adapter's request policy against a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyro.errors import RegistryError
from pyro.oci.client import RegistryClient
from pyro.oci.reference import parse_oci_ref

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Stub:
    """Answers each request with the next scripted reply; records what it was asked."""

    replies: list[Callable[[http.server.BaseHTTPRequestHandler], Reply]] = field(
        default_factory=list
    )
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stub]:
    monkeypatch.delenv("PYRO_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("PYRO_REGISTRY_PASSWORD", raising=False)
    monkeypatch.delenv("PYRO_REGISTRY_HOST", raising=False)
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    state = Stub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            state.seen.append((self.command, self.path, self.headers.get("Authorization")))
            code, headers, body = state.replies.pop(0)(self) if state.replies else (500, {}, b"")
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client(stub: Stub, tag: str = "1") -> RegistryClient:
    return RegistryClient(parse_oci_ref(f"oci://127.0.0.1:{stub.port}/pyro/x:{tag}"))


def fixed(code: int, body: bytes = b"", **headers: str) -> Callable[..., Reply]:
    return lambda _: (code, {k.replace("_", "-"): v for k, v in headers.items()}, body)


MANIFEST = b'{"schemaVersion":2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def test_manifest_digest_is_checked(stub: Stub) -> None:
    stub.replies = [fixed(200, MANIFEST, Docker_Content_Digest=DIGEST)]
    assert client(stub).get_manifest() == (DIGEST, MANIFEST)
    stub.replies = [fixed(200, MANIFEST, Docker_Content_Digest="sha256:" + "0" * 64)]
    with pytest.raises(RegistryError, match="promised"):
        client(stub).get_manifest()


def test_basic_challenge_answered_with_env_credentials(
    stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("PYRO_REGISTRY_PASSWORD", "s3cret")
    monkeypatch.setenv("PYRO_REGISTRY_HOST", f"127.0.0.1:{stub.port}")
    stub.replies = [
        fixed(401, WWW_Authenticate='Basic realm="test"'),
        fixed(200, MANIFEST, Docker_Content_Digest=DIGEST),
    ]
    assert client(stub).resolve() == DIGEST
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert stub.seen[-1][2] == expected


def test_refused_without_credentials(stub: Stub) -> None:
    stub.replies = [fixed(401, WWW_Authenticate='Basic realm="test"')]
    with pytest.raises(RegistryError, match="refused access") as caught:
        client(stub).resolve()
    assert "PYRO_REGISTRY_USERNAME" in caught.value.hint


def test_not_found(stub: Stub) -> None:
    stub.replies = [fixed(404)]
    with pytest.raises(RegistryError, match="not found"):
        client(stub).resolve()
    assert len(stub.seen) == 1  # a 404 is not retried


def test_transient_failure_is_retried(stub: Stub) -> None:
    stub.replies = [fixed(503), fixed(200, MANIFEST, Docker_Content_Digest=DIGEST)]
    assert client(stub).resolve() == DIGEST
    assert len(stub.seen) == 2


def test_retries_are_bounded(stub: Stub) -> None:
    stub.replies = [fixed(500)] * 10
    with pytest.raises(RegistryError, match="after 3 attempts"):
        client(stub).resolve()
    assert len(stub.seen) == 3


def test_blob_digest_and_size_are_checked(stub: Stub, tmp_path: Path) -> None:
    body = b"blob bytes"
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    stub.replies = [fixed(200, body)]
    client(stub).fetch_blob(digest, len(body), tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == body

    stub.replies = [fixed(200, b"tampered!!")]
    with pytest.raises(RegistryError, match="does not match its digest"):
        client(stub).fetch_blob(digest, len(body), tmp_path / "bad")

    stub.replies = [fixed(200, body + b"more")]
    with pytest.raises(RegistryError, match="longer than the 10 bytes its manifest declares"):
        client(stub).fetch_blob(digest, len(body), tmp_path / "long")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "long").exists()
