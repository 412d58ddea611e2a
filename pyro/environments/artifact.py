"""pyro's OCI artifact format for environments (docs/oci-format.md), pushed and pulled.

One image manifest per environment: ``artifactType`` marks it as a pyro environment, a
small JSON config blob holds the metadata, and each boot artifact is one zstd- (or gzip-)
compressed layer annotated with its uncompressed sha256 and size. Compression and
decompression are streamed; a rootfs is never held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import zstandard

from pyro.environments.cache.files import ARTIFACT_FILES, DIGEST_RE, MEDIA_TYPES, canonical_json
from pyro.errors import RegistryError, UsageError
from pyro.oci.client import MANIFEST_MEDIA_TYPE, RegistryClient
from pyro.spec.ref import OciRef

ARTIFACT_TYPE = "application/vnd.pyro.environment.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.pyro.environment.config.v1+json"
TITLE = "org.opencontainers.image.title"
ROLE = "dev.pyro.role"
UNCOMPRESSED_DIGEST = "dev.pyro.uncompressed.digest"
UNCOMPRESSED_SIZE = "dev.pyro.uncompressed.size"
ZSTD_LEVEL = 10  # measured: see docs/oci-format.md
MAX_CONFIG_BYTES = 1 << 20
MAX_PULL_ENV = "PYRO_PULL_MAX_MB"
DEFAULT_MAX_PULL_MIB = 65536 + 1024
"""The largest rootfs a spec may ask for (64 GiB) plus 1 GiB for the kernel."""
_CHUNK = 1 << 20
_SIZE_RE = re.compile(r"[0-9]{1,20}")

ByteProgress = Callable[[str, int, int], None]
"""Called as (what, bytes done so far, total bytes) while blobs move."""


@dataclass(frozen=True)
class PulledArtifact:
    """What a pull left in its work dir, ready for :meth:`Cache.install`."""

    digest: str
    config: dict[str, Any]
    staged_dir: Path
    digests: dict[str, str]
    """sha256 of each staged file (by file name), computed while it was written."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _reader(media_type: str, src: BinaryIO) -> _Readable:
    """A decompressing reader whose ``read(n)`` returns at most n bytes.

    Bounded reads matter: a 1 MiB zstd chunk of a mostly-empty ext4 can expand to
    hundreds of MiB, so one-shot ``decompress(chunk)`` calls could exhaust memory.
    """
    if media_type.endswith("+zstd"):
        return zstandard.ZstdDecompressor().stream_reader(src, read_size=_CHUNK)
    if media_type.endswith("+gzip"):
        return gzip.GzipFile(fileobj=src, mode="rb")
    raise RegistryError(f"layer media type {media_type} uses an unknown compression")


# -- push --------------------------------------------------------------------------------


def push_environment(
    manifest: dict[str, Any],
    install_dir: Path,
    ref: OciRef,
    work: Path,
    *,
    insecure: bool = False,
    progress: ByteProgress | None = None,
) -> str:
    """Push an install (its cache manifest and files) to ``ref``; returns the manifest digest.

    Raises:
        RegistryError: the ref has no tag to push to, or the registry refuses.
    """
    if ref.digest is not None:
        raise RegistryError(
            f"cannot push to {ref}: a digest reference is immutable",
            "push to a tag, e.g. oci://REGISTRY/REPO:TAG",
        )
    client = RegistryClient(ref, insecure=insecure)
    layers = []
    for role, file in ARTIFACT_FILES.items():
        entry = manifest["artifacts"][role]
        blob = work / f"{role}.zst"
        digest, size = _compress(install_dir / file, blob)
        client.push_blob(blob, digest, size)
        if progress is not None:
            progress(f"upload {file}", size, size)
        layers.append(
            {
                "mediaType": f"{MEDIA_TYPES[role]}+zstd",
                "digest": digest,
                "size": size,
                "annotations": {
                    TITLE: file,
                    ROLE: role,
                    UNCOMPRESSED_DIGEST: entry["sha256"],
                    UNCOMPRESSED_SIZE: str(entry["size"]),
                },
            }
        )
        blob.unlink()
    config = canonical_json({k: v for k, v in manifest.items() if k != "source"})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (work / "config.json").write_bytes(config)
    client.push_blob(work / "config.json", config_digest, len(config))
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": layers,
        "annotations": {
            "org.opencontainers.image.title": str(manifest.get("name", "")),
            "org.opencontainers.image.version": str(manifest.get("version", "")),
        },
    }
    return client.put_manifest(canonical_json(document), ref.tag or "latest")


def _compress(source: Path, target: Path) -> tuple[str, int]:
    """zstd-compress ``source`` into ``target`` chunk by chunk; (sha256, size) of the result."""
    hasher = hashlib.sha256()
    size = 0
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).compressobj()
    with open(source, "rb") as src, open(target, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            data = compressor.compress(chunk) if chunk else compressor.flush()
            hasher.update(data)
            size += len(data)
            out.write(data)
            if not chunk:
                break
    return "sha256:" + hasher.hexdigest(), size


# -- pull --------------------------------------------------------------------------------


def pull_environment(
    ref: OciRef,
    work: Path,
    *,
    insecure: bool = False,
    progress: ByteProgress | None = None,
    manifest: tuple[str, bytes] | None = None,
) -> PulledArtifact:
    """Fetch the environment at ``ref`` into ``work``; every blob is digest-checked.

    ``manifest`` is (digest, bytes) of the manifest when the caller fetched it already.

    Raises:
        RegistryError: unreachable, refused, not a pyro environment, or any content that
            does not match its digest.
    """
    limit = max_pull_bytes()  # a bad setting fails before any request
    client = RegistryClient(ref, insecure=insecure)
    digest, data = manifest if manifest is not None else client.get_manifest()
    document = parse_manifest(data, ref, limit=limit)
    config_desc = document["config"]
    client.fetch_blob(config_desc["digest"], config_desc["size"], work / "config.json", small=True)
    try:
        config = json.loads((work / "config.json").read_bytes())
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"the config blob of {ref} is not JSON") from exc
    if not isinstance(config, dict):
        raise RegistryError(f"the config blob of {ref} is not a JSON object")
    staged = work / "staged"
    staged.mkdir()
    digests: dict[str, str] = {}
    for layer in document["layers"]:
        annotations = layer["annotations"]
        blob = work / "layer.blob"
        done = 0

        def report(n: int, what: str = annotations[TITLE], total: int = layer["size"]) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(f"download {what}", done, total)

        client.fetch_blob(layer["digest"], layer["size"], blob, report)
        _decompress(blob, staged / annotations[TITLE], layer, ref)
        digests[annotations[TITLE]] = annotations[UNCOMPRESSED_DIGEST]
        blob.unlink()
    return PulledArtifact(digest=digest, config=config, staged_dir=staged, digests=digests)


def max_pull_bytes() -> int:
    """``$PYRO_PULL_MAX_MB`` in bytes, else :data:`DEFAULT_MAX_PULL_MIB` MiB.

    Raises:
        UsageError: the variable is set but not a positive whole number.
    """
    raw = os.environ.get(MAX_PULL_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PULL_MIB << 20
    if not raw.isdigit() or int(raw) == 0 or len(raw) > 12:
        raise UsageError(
            f"${MAX_PULL_ENV}={raw[:40]!r} is not a size in MiB",
            f"set {MAX_PULL_ENV} to a whole number of MiB, e.g. {DEFAULT_MAX_PULL_MIB}",
        )
    return int(raw) << 20


def parse_manifest(data: bytes, ref: OciRef, *, limit: int | None = None) -> dict[str, Any]:
    """Check that a manifest describes a pyro environment and return it.

    ``limit`` (default :func:`max_pull_bytes`) bounds both what the layers declare to
    download and what they declare to unpack to: a larger claim is refused before any
    blob is asked for.

    Raises:
        RegistryError: it is not JSON, not a pyro environment, lacks a boot artifact, or
            declares more bytes than ``limit``.
        UsageError: ``$PYRO_PULL_MAX_MB`` is malformed.
    """
    limit = max_pull_bytes() if limit is None else limit
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"the manifest of {ref} is not JSON") from exc
    if not isinstance(document, dict):
        raise RegistryError(f"the manifest of {ref} is not a JSON object")
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise RegistryError(f"the config descriptor in the manifest of {ref} is malformed")
    kind = document.get("artifactType") or config.get("mediaType")
    if kind != ARTIFACT_TYPE and config.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise RegistryError(
            f"{ref} is not a pyro environment (artifactType {kind!r})",
            "point at an artifact pushed with 'pyro env push'",
        )
    _check_descriptor(config, ref, "config")
    if config["size"] > MAX_CONFIG_BYTES:
        raise RegistryError(f"the config blob of {ref} is implausibly large ({config['size']})")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"the manifest of {ref} has no layers")
    roles = {}
    for layer in layers:
        _check_descriptor(layer, ref, "layer")
        annotations = layer.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise RegistryError(f"a layer's annotations in the manifest of {ref} are malformed")
        title = annotations.get(TITLE)
        role = annotations.get(ROLE)
        if isinstance(role, str) and role in ARTIFACT_FILES and title == ARTIFACT_FILES[role]:
            size = annotations.get(UNCOMPRESSED_SIZE, "")
            if not DIGEST_RE.fullmatch(str(annotations.get(UNCOMPRESSED_DIGEST))) or not (
                isinstance(size, str) and _SIZE_RE.fullmatch(size)
            ):
                raise RegistryError(f"the {role} layer of {ref} lacks its uncompressed digest")
            roles[role] = layer
    missing = sorted(set(ARTIFACT_FILES) - set(roles))
    if missing:
        raise RegistryError(f"{ref} lacks the {', '.join(missing)} layer(s)")
    document["layers"] = [roles[role] for role in ARTIFACT_FILES]
    download = sum(layer["size"] for layer in document["layers"])
    unpacked = sum(int(layer["annotations"][UNCOMPRESSED_SIZE]) for layer in document["layers"])
    for amount, verb in ((download, "download"), (unpacked, "unpack to")):
        if amount > limit:
            raise RegistryError(
                f"{ref} declares {amount} bytes to {verb}, more than the pull limit of "
                f"{limit >> 20} MiB; refused before downloading",
                f"if the environment really is that large, raise {MAX_PULL_ENV}",
            )
    return document


def _check_descriptor(desc: Any, ref: OciRef, what: str) -> None:
    ok = (
        isinstance(desc, dict)
        and DIGEST_RE.fullmatch(str(desc.get("digest")))
        and isinstance(desc.get("size"), int)
        and desc["size"] >= 0
        and isinstance(desc.get("mediaType"), str)
    )
    if not ok:
        raise RegistryError(f"a {what} descriptor in the manifest of {ref} is malformed")


def _decompress(blob: Path, target: Path, layer: dict[str, Any], ref: OciRef) -> None:
    """Decompress a layer into ``target``, checking its uncompressed size and sha256.

    Runs of zeros become holes (ext4 images are mostly empty), so a 1 GiB rootfs costs only
    the disk space its data needs, and the write is much faster.
    """
    annotations = layer["annotations"]
    expected_size = int(annotations[UNCOMPRESSED_SIZE])
    hasher = hashlib.sha256()
    size = 0
    zero = bytes(_CHUNK)
    try:
        with open(blob, "rb") as src, open(target, "wb") as out:
            reader = _reader(layer["mediaType"], src)
            while data := reader.read(_CHUNK):
                size += len(data)
                if size > expected_size:
                    break  # never write more than the manifest promised
                hasher.update(data)
                if len(data) == _CHUNK and data == zero:
                    out.seek(len(data), os.SEEK_CUR)
                else:
                    out.write(data)
            out.truncate(min(size, expected_size))
            out.flush()
            os.fsync(out.fileno())
    except (zstandard.ZstdError, zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise RegistryError(f"the {annotations[TITLE]} layer of {ref} does not decompress") from exc
    actual = "sha256:" + hasher.hexdigest()
    if size != expected_size or actual != annotations[UNCOMPRESSED_DIGEST]:
        raise RegistryError(
            f"{annotations[TITLE]} from {ref} does not match its uncompressed digest; rejected",
            "the artifact was pushed corrupt; push the environment again",
        )
