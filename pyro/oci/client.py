"""The oras adapter: manifests and blobs by digest, verified, bounded, with bounded retries.

oras-py's ``Registry`` gives us URL building and chunked uploads. Its own ``do_request``
retries every failure for minutes, sets no timeout, reads whole bodies into memory and
hands credentials to any URL, so this adapter replaces it and the auth flow: one request
(plus one authenticated retry), a timeout, tenacity retries only for transient failures,
and every body read with a byte cap and a time bound. Every foreign exception becomes a
RegistryError here.

What a registry can send is bounded (docs/oci-format.md, "Limits"):

* a manifest, a token answer or any other response body: :data:`MAX_DOCUMENT_BYTES`,
  whole within :data:`DOCUMENT_SECONDS`;
* a blob: exactly the size its descriptor declares (more is refused before it is
  written), at no less than :data:`RATE_MIN_BYTES` per :data:`RATE_WINDOW` seconds.

Credentials (:mod:`pyro.oci.auth`) are looked up only when the registry answers 401 and go
only to the registry's own host and scheme (or the token endpoint it names, over https or
loopback), never over plain http to a host that is not loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import oras.provider
import requests
import urllib3.exceptions
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from pyro.errors import CacheError, RegistryError
from pyro.oci.auth import (
    Credentials,
    credentials_for,
    is_loopback,
    may_send_credentials,
    may_send_credentials_to_url,
)
from pyro.spec.ref import OciRef

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ACCEPTED_MANIFESTS = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
"""What a manifest GET accepts: pyro artifacts, container images and multi-arch indexes
(a registry must never convert a Docker v2 manifest to schema 1 for us: other digest)."""
TIMEOUT = (10.0, 60.0)  # connect, read (between bytes)
ATTEMPTS = 3
MAX_REDIRECTS = 5
MAX_DOCUMENT_BYTES = 4 << 20
"""Bytes a manifest (OCI's recommended limit) or any other non-blob answer may have."""
DOCUMENT_SECONDS = 60.0
"""Seconds a manifest, config blob or other small answer may take to arrive, whole."""
RATE_WINDOW = 60.0
RATE_MIN_BYTES = 1 << 20
"""A blob download slower than this many bytes per RATE_WINDOW seconds is ended."""
_CHUNK = 1 << 20
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,16384}")
_CHALLENGE_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)="([^"]*)"')
_T = TypeVar("_T")


class TransientError(Exception):
    """Internal: a failure worth retrying (connection reset, 429, 5xx)."""


_TRANSIENT = (
    TransientError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, requests.exceptions.SSLError)


_retry = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(ATTEMPTS),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)


def read_body(
    response: requests.Response,
    what: str,
    *,
    limit: int,
    too_big: str,
    deadline: float | None = None,
) -> Iterator[bytes]:
    """The body of a streamed response, chunk by chunk, as the registry sent it.

    Each read returns as soon as bytes arrive, so the bounds are checked as they go: more
    than ``limit`` bytes ends it (``too_big`` says why) before the extra bytes are handed
    on; so does passing ``deadline`` (``time.monotonic()``), or, without a deadline, moving
    less than :data:`RATE_MIN_BYTES` in a :data:`RATE_WINDOW`.

    Raises:
        RegistryError: a bound was hit (not retried).
        requests.Timeout, requests.ConnectionError: the connection stalled or broke.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RegistryError(f"{too_big} (it announces {int(declared)} bytes); rejected", _HOSTILE)
    raw = response.raw
    total = 0
    window_start, window_bytes = time.monotonic(), 0
    while True:
        try:
            chunk = raw.read1(_CHUNK, decode_content=False)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.Timeout(f"{what}: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise requests.ConnectionError(f"{what}: {exc}") from exc
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise RegistryError(f"{too_big}; rejected", _HOSTILE)
        now = time.monotonic()
        if deadline is not None:
            if now > deadline:
                raise RegistryError(
                    f"{what} did not arrive within {DOCUMENT_SECONDS:g} s (got {total} bytes "
                    "so far); stopped",
                    "the registry is too slow or stalling on purpose; retry later",
                )
        else:
            window_bytes += len(chunk)
            if now - window_start >= RATE_WINDOW:
                if window_bytes < RATE_MIN_BYTES:
                    raise RegistryError(
                        f"{what} arrived at {window_bytes} bytes in {now - window_start:.0f} s, "
                        f"below the floor of {RATE_MIN_BYTES} bytes per {RATE_WINDOW:g} s; stopped",
                        "the registry is too slow or stalling on purpose; retry later",
                    )
                window_start, window_bytes = now, 0
        yield chunk


_HOSTILE = "the registry or something between us sends more than it should; do not use it"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme, parameters) of a ``Www-Authenticate`` header, scheme lowercased."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(rest))


class _Session(requests.Session):
    """A session that never follows a redirect itself.

    requests reads a redirect's whole body before following it, and does so even with
    ``allow_redirects=False`` (to prepare ``Response.next``): an endless body would fill
    memory. :meth:`_Oras.do_request` follows redirects instead, without reading them.
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None

    def location(self, resp: requests.Response) -> str | None:
        """Where a redirect points (requests' own decoding of the header)."""
        return super().get_redirect_target(resp)


class _Oras(oras.provider.Registry):  # type: ignore[misc]
    """oras Registry with our request and auth policy (see module doc)."""

    def __init__(self, registry: str, *, plain_http: bool) -> None:
        super().__init__(hostname=registry, insecure=plain_http, auth_backend="token")
        session = _Session()
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # as oras does
        self.session = self.auth.session = session
        self._registry = registry.lower()
        self._scheme = "http" if plain_http else "https"
        self._plain_http = plain_http
        self._creds: Credentials | None = None
        self._creds_looked_up = False
        self._basic_accepted = False
        self._token: str | None = None

    # -- credentials ---------------------------------------------------------------------

    def own_url(self, url: str) -> bool:
        """Whether ``url`` is on the registry itself, with the scheme chosen for it."""
        parts = urlsplit(url)
        return parts.scheme == self._scheme and parts.netloc.lower() == self._registry

    def credentials(self) -> Credentials | None:
        """The registry's credentials, looked up once, when first needed; None when there
        are none or they may not be sent over this transport.

        Raises:
            RegistryError: the credential configuration is broken (see pyro.oci.auth).
        """
        if not self._creds_looked_up:
            self._creds_looked_up = True
            if may_send_credentials(self._registry, plain_http=self._plain_http):
                self._creds = credentials_for(self._registry)
        return self._creds

    def _basic(self) -> str | None:
        creds = self.credentials()
        if creds is None:
            return None
        return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()

    def _auth_header(self) -> dict[str, str]:
        if self._token is not None:
            return {"Authorization": f"Bearer {self._token}"}
        if self._basic_accepted:
            # Answer a basic-auth registry up front instead of sending every body twice.
            basic = self._basic()
            if basic is not None:
                return {"Authorization": f"Basic {basic}"}
        return {}

    def _authenticate(self, response: requests.Response) -> dict[str, str] | None:
        """Headers that answer a 401's challenge, or None when we have nothing to offer."""
        scheme, params = _challenge(response.headers.get("Www-Authenticate", ""))
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                return None
            self._basic_accepted = True
            return {"Authorization": f"Basic {basic}"}
        if scheme == "bearer" and params.get("realm"):
            self._token = self._fetch_token(params)
            if self._token is not None:
                return {"Authorization": f"Bearer {self._token}"}
        return None

    def _fetch_token(self, params: dict[str, str]) -> str | None:
        """A bearer token from the realm the challenge names (docker's token protocol)."""
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(
                f"registry {self._registry} names a token endpoint that is not an http(s) URL",
                _HOSTILE,
            )
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        basic = self._basic() if may_send_credentials_to_url(realm) else None
        if basic is not None:
            headers["Authorization"] = f"Basic {basic}"
        query = {key: params[key] for key in ("service", "scope") if key in params}
        session: requests.Session = self.session
        with session.get(
            realm,
            params=query,
            headers=headers,
            timeout=TIMEOUT,
            stream=True,
            allow_redirects=False,  # a redirect's body would be read whole
        ) as answer:
            if answer.status_code != 200:
                return None
            body = b"".join(
                read_body(
                    answer,
                    f"the token from {parts.netloc}",
                    limit=MAX_DOCUMENT_BYTES,
                    too_big=f"the token answer from {parts.netloc} is larger than "
                    f"{MAX_DOCUMENT_BYTES} bytes",
                    deadline=time.monotonic() + DOCUMENT_SECONDS,
                )
            )
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RegistryError(
                f"the token endpoint of {self._registry} answered with non-JSON"
            ) from exc
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise RegistryError(
                f"the token endpoint of {self._registry} answered without a usable token",
                _HOSTILE,
            )
        return token

    # -- requests ------------------------------------------------------------------------

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        """One request, answered once if the registry asks for credentials, redirects
        followed here (at most :data:`MAX_REDIRECTS`, their bodies never read), and, unless
        ``stream``, the body read with the document bounds."""
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        headers.setdefault("Accept-Encoding", "identity")  # hash the bytes as stored
        redirects = 0
        while True:
            response = self._send(method, url, data, json, headers)
            follow = method in ("GET", "HEAD") or response.status_code in (307, 308)
            location = self.session.location(response) if follow else None
            if not location:
                break
            response.close()
            if redirects == MAX_REDIRECTS:
                raise RegistryError(
                    f"registry {self._registry} redirected {method} {urlsplit(url).path} "
                    f"more than {MAX_REDIRECTS} times",
                    _HOSTILE,
                )
            redirects += 1
            url = urljoin(url, location)
        if not stream:
            _preload(response, f"the answer to {method} {urlsplit(url).path}")
        return response

    def _send(
        self, method: str, url: str, data: Any, json: Any, headers: dict[str, str]
    ) -> requests.Response:
        headers = dict(headers)
        own = self.own_url(url)  # a Location header can name any URL: no credentials there
        if own:
            headers.update(self._auth_header())
        session: requests.Session = self.session

        def send() -> requests.Response:
            return session.request(
                method,
                url,
                data=data,
                json=json,
                headers=headers,
                stream=True,
                timeout=TIMEOUT,
                allow_redirects=False,
            )

        response = send()
        if response.status_code == 401 and own:
            try:
                answer = self._authenticate(response)
            except BaseException:
                response.close()
                raise
            if answer is not None:
                response.close()
                headers.update(answer)
                response = send()
        return response


def _preload(response: requests.Response, what: str) -> None:
    """Read a small answer's body, bounded, where ``response.content`` finds it."""
    with response:
        body = b"".join(
            read_body(
                response,
                what,
                limit=MAX_DOCUMENT_BYTES,
                too_big=f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes",
                deadline=time.monotonic() + DOCUMENT_SECONDS,
            )
        )
    response._content = body
    response._content_consumed = True


class RegistryClient:
    """One repository on one registry, as named by an ``oci://`` reference."""

    def __init__(self, ref: OciRef, *, insecure: bool = False) -> None:
        """No request yet, and no credential lookup: that waits for a registry's 401."""
        self.ref = ref
        # Plain http only where nobody else can listen in, or when the user said so.
        self.plain_http = insecure or is_loopback(ref.registry)
        self._oras = _Oras(ref.registry, plain_http=self.plain_http)
        self._container = self._oras.get_container(f"{ref.registry}/{ref.repository}:latest")
        self._base = (
            f"{'http' if self.plain_http else 'https'}://{ref.registry}/v2/{ref.repository}"
        )

    # -- manifests -----------------------------------------------------------------------

    def resolve(self, reference: str | None = None) -> str:
        """The manifest digest a tag (default: the ref's tag or digest) points at.

        Raises:
            RegistryError: unreachable, refused, or no such manifest.
        """
        return self.get_manifest(reference)[0]

    def get_manifest(self, reference: str | None = None) -> tuple[str, bytes]:
        """(digest, exact bytes) of a manifest; the bytes are checked against the digest.

        Raises:
            RegistryError: unreachable, refused, not found, or the bytes do not match.
        """
        reference = reference or self.ref.digest or self.ref.tag or "latest"
        what = f"manifest {reference} of {self.ref}"

        def fetch() -> tuple[bytes, str | None]:
            with self._request(
                "GET",
                f"/manifests/{reference}",
                stream=True,
                headers={"Accept": ACCEPTED_MANIFESTS},
            ) as response:
                self._check(response, f"manifest {reference}")
                body = read_body(
                    response,
                    f"the {what}",
                    limit=MAX_DOCUMENT_BYTES,
                    too_big=f"the {what} is larger than {MAX_DOCUMENT_BYTES} bytes",
                    deadline=time.monotonic() + DOCUMENT_SECONDS,
                )
                return b"".join(body), response.headers.get("Docker-Content-Digest")

        data, promised = self._call(fetch, f"manifest {reference}")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = reference if reference.startswith("sha256:") else None
        expected = expected or promised
        if expected and expected != digest:
            raise RegistryError(
                f"manifest {self.ref} has digest {digest}, the registry promised {expected}",
                "the registry or something between us altered the manifest; do not use it",
            )
        return digest, data

    def put_manifest(self, data: bytes, tag: str, media_type: str = MANIFEST_MEDIA_TYPE) -> str:
        """Upload exact manifest bytes (of ``media_type``) under ``tag``; returns their digest.

        Raises:
            RegistryError: refused or unreachable.
        """

        def put() -> requests.Response:
            return self._request(
                "PUT",
                f"/manifests/{tag}",
                data=data,
                headers={"Content-Type": media_type},
            )

        self._call(put, f"manifest {tag}")
        return "sha256:" + hashlib.sha256(data).hexdigest()

    # -- blobs ---------------------------------------------------------------------------

    def fetch_blob(
        self,
        digest: str,
        size: int,
        dest: Path,
        progress: Callable[[int], None] | None = None,
        *,
        small: bool = False,
    ) -> None:
        """Download blob ``digest`` into ``dest``, streamed, checking its size and sha256.

        At most ``size`` bytes are written: a registry that sends more is refused before
        the extra bytes reach the disk. A ``small`` blob (a config) must arrive whole within
        :data:`DOCUMENT_SECONDS`; others must keep up :data:`RATE_MIN_BYTES` per
        :data:`RATE_WINDOW`. ``dest`` is removed when the download fails.

        Raises:
            RegistryError: unreachable, refused, too slow, more bytes than declared, or the
                content does not match the digest.
            CacheError: ``dest`` cannot be written.
        """

        def fetch() -> None:
            hasher = hashlib.sha256()
            written = 0
            deadline = time.monotonic() + DOCUMENT_SECONDS if small else None
            try:
                with (
                    self._request("GET", f"/blobs/{digest}", stream=True) as response,
                    open(dest, "wb") as out,
                ):
                    self._check(response, f"blob {digest}")
                    body = read_body(
                        response,
                        f"blob {digest} from {self.ref}",
                        limit=size,
                        too_big=f"blob {digest} from {self.ref} is longer than the {size} "
                        "bytes its manifest declares",
                        deadline=deadline,
                    )
                    for chunk in body:
                        written += len(chunk)
                        hasher.update(chunk)
                        out.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            actual = "sha256:" + hasher.hexdigest()
            if written != size or actual != digest:
                dest.unlink(missing_ok=True)
                raise RegistryError(
                    f"blob {digest} from {self.ref} does not match its digest "
                    f"(got {written} bytes, sha256 {actual[7:19]}…); rejected",
                    "the registry's copy is corrupt or was tampered with; push it again",
                )

        self._call(fetch, f"blob {digest}")

    def push_blob(self, path: Path, digest: str, size: int) -> None:
        """Upload a file as blob ``digest`` unless the registry already has it.

        Raises:
            RegistryError: refused or unreachable.
        """
        layer = {"digest": digest, "size": size, "mediaType": "application/octet-stream"}

        def upload() -> None:
            with self._request("HEAD", f"/blobs/{digest}", stream=True) as head:
                if head.status_code == 200:
                    return  # the registry has it already
                if head.status_code != 404:
                    self._check(head, f"blob {digest}")  # refused, etc.: say so clearly
            # Chunked upload reads the file in 16 MiB pieces; never the whole blob in memory.
            response = self._oras.chunked_upload(str(path), self._container, layer)
            self._check(response, f"blob {digest}")

        self._call(upload, f"blob {digest}")

    # -- plumbing ------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response: requests.Response = self._oras.do_request(self._base + path, method, **kwargs)
        if response.status_code == 429 or response.status_code >= 500:
            response.close()
            raise TransientError(f"HTTP {response.status_code}")
        if kwargs.get("stream"):
            return response
        self._check(response, path.lstrip("/"))
        return response

    def _check(self, response: requests.Response, what: str) -> None:
        code = response.status_code
        if code < 300:
            return
        if code in (401, 403):
            if not may_send_credentials(self.ref.registry, plain_http=self.plain_http):
                raise RegistryError(
                    f"registry {self.ref.registry} refused access to {self.ref.repository} "
                    f"(HTTP {code}); pyro never sends credentials over plain http to a "
                    "registry that is not on this machine",
                    "serve the registry over https and drop --insecure (or source.insecure)",
                )
            raise RegistryError(
                f"registry {self.ref.registry} refused access to {self.ref.repository} "
                f"(HTTP {code})",
                f"log in with 'docker login {self.ref.registry}' or set "
                "PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD with "
                f"PYRO_REGISTRY_HOST={self.ref.registry}",
            )
        if code == 404:
            raise RegistryError(
                f"{what} not found in {self.ref}",
                "check the repository and tag; 'pyro env push ENV REF' publishes one",
            )
        raise RegistryError(f"registry {self.ref.registry} answered HTTP {code} for {what}")

    def _call(self, func: Callable[[], _T], what: str) -> _T:
        try:
            return _retry(func)()
        except RegistryError:
            raise
        except TransientError as exc:
            raise RegistryError(
                f"registry {self.ref.registry} kept failing for {what} ({exc}) "
                f"after {ATTEMPTS} attempts",
                "the registry may be overloaded; retry later",
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise RegistryError(
                f"TLS with registry {self.ref.registry} failed: {exc}",
                "if the registry serves plain http, pass --insecure (or source.insecure: true)",
            ) from exc
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise RegistryError(
                f"cannot reach registry {self.ref.registry} for {what}: {type(exc).__name__}",
                "check the address, that the registry is running, and your network",
            ) from exc
        except (requests.RequestException, ValueError) as exc:
            raise RegistryError(f"registry {self.ref.registry} failed for {what}: {exc}") from exc
        except OSError as exc:
            raise CacheError(f"cannot write {what} from {self.ref}: {exc}") from exc
