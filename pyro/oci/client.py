"""The oras adapter: manifests and blobs by digest, verified, with bounded retries.

oras-py's ``Registry`` gives us URL building, the bearer-token dance and chunked uploads.
Its own ``do_request`` retries every failure for minutes and sets no timeout, so this
adapter replaces it: one request (plus one authenticated retry), a timeout, and tenacity
retries only for transient failures. Every foreign exception becomes a RegistryError here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import oras.provider
import requests
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from pyro.errors import CacheError, RegistryError
from pyro.oci.auth import credentials_for
from pyro.spec.ref import OciRef

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TIMEOUT = (10.0, 60.0)  # connect, read (between bytes)
ATTEMPTS = 3
_CHUNK = 1 << 20
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


class _Oras(oras.provider.Registry):  # type: ignore[misc]
    """oras Registry with our request policy (see module doc)."""

    def __init__(self, hostname: str, *, plain_http: bool, basic: str | None) -> None:
        super().__init__(hostname=hostname, insecure=plain_http, auth_backend="token")
        self._basic = basic
        self._basic_accepted = False
        if basic is not None:
            self.auth._basic_auth = basic

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = dict(headers or {})
        headers.update(self.auth.get_auth_header())
        if self._basic_accepted:
            # Answer a basic-auth registry up front instead of sending every body twice.
            headers["Authorization"] = f"Basic {self._basic}"

        session: requests.Session = self.session

        def send() -> requests.Response:
            return session.request(
                method, url, data=data, json=json, headers=headers, stream=stream, timeout=TIMEOUT
            )

        response = send()
        if response.status_code != 401:
            return response
        challenge = response.headers.get("Www-Authenticate", "")
        if challenge.lower().startswith("basic"):
            if self._basic is None:
                return response
            headers["Authorization"] = f"Basic {self._basic}"
            self._basic_accepted = True
        else:
            headers, changed = self.auth.authenticate_request(response, headers)
            if not changed:
                return response
        response.close()
        return send()


class RegistryClient:
    """One repository on one registry, as named by an ``oci://`` reference."""

    def __init__(self, ref: OciRef, *, insecure: bool = False) -> None:
        """Raises:
        RegistryError: the credentials configured for the registry are malformed.
        """
        self.ref = ref
        creds = credentials_for(ref.registry)
        basic = None
        if creds is not None:
            basic = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        # Plain http only where nobody else can listen in, or when the user said so.
        self.plain_http = insecure or ref.is_loopback
        self._oras = _Oras(ref.registry, plain_http=self.plain_http, basic=basic)
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

        def fetch() -> requests.Response:
            return self._request(
                "GET", f"/manifests/{reference}", headers={"Accept": MANIFEST_MEDIA_TYPE}
            )

        response = self._call(fetch, f"manifest {reference}")
        data = response.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = reference if reference.startswith("sha256:") else None
        expected = expected or response.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise RegistryError(
                f"manifest {self.ref} has digest {digest}, the registry promised {expected}",
                "the registry or something between us altered the manifest; do not use it",
            )
        return digest, data

    def put_manifest(self, data: bytes, tag: str) -> str:
        """Upload exact manifest bytes under ``tag``; returns their digest.

        Raises:
            RegistryError: refused or unreachable.
        """

        def put() -> requests.Response:
            return self._request(
                "PUT",
                f"/manifests/{tag}",
                data=data,
                headers={"Content-Type": MANIFEST_MEDIA_TYPE},
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
    ) -> None:
        """Download blob ``digest`` into ``dest``, streamed, checking its size and sha256.

        Raises:
            RegistryError: unreachable, refused, or the content does not match the digest.
        """

        def fetch() -> None:
            hasher = hashlib.sha256()
            written = 0
            with (
                self._request("GET", f"/blobs/{digest}", stream=True) as response,
                open(dest, "wb") as out,
            ):
                self._check(response, f"blob {digest}")
                for chunk in _iter(response):
                    written += len(chunk)
                    if written > size:
                        break
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            actual = "sha256:" + hasher.hexdigest()
            if written != size or actual != digest:
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
            raise RegistryError(
                f"registry {self.ref.registry} refused access to {self.ref.repository} "
                f"(HTTP {code})",
                "log in with 'docker login REGISTRY' or set "
                "PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD",
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


def _iter(response: requests.Response) -> Iterator[bytes]:
    for chunk in response.iter_content(chunk_size=_CHUNK):
        if chunk:
            yield chunk
