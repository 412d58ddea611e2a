"""Container images in a registry: tell them from pyro artifacts, pick linux/amd64, fetch them.

An ``oci://`` reference names either a pyro environment artifact or a container image; the
manifest's config media type says which (docs/oci-format.md). An image index (or Docker
manifest list) is followed to its ``linux/amd64`` manifest. The config and every layer
blob are fetched through :class:`~pyro.oci.client.RegistryClient`: digest-checked, each
bounded to its declared size, and all layers together bounded before the first one is
asked for. Applying the layers is the domain's job (``pyro.environments.image``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyro.errors import RegistryError
from pyro.oci.client import MANIFEST_MEDIA_TYPE, RegistryClient
from pyro.spec.ref import OciRef

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_CONFIGS = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
PYRO_CONFIG = "application/vnd.pyro.environment.config.v1+json"
PYRO_ARTIFACT = "application/vnd.pyro.environment.v1+json"
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}
"""Layer media types pyro unpacks, and their compression."""
MAX_IMAGE_CONFIG_BYTES = 1 << 20
MAX_LAYERS = 256
PLATFORM = ("linux", "amd64")

Kind = Literal["pyro", "image"]


@dataclass(frozen=True)
class Layer:
    """One layer blob as the manifest declares it."""

    digest: str
    size: int
    compression: str  # "tar", "gzip" or "zstd"


@dataclass(frozen=True)
class ImageManifest:
    """A container image's manifest for linux/amd64, checked."""

    digest: str
    """The digest the reference resolved to (an index's, when it named one)."""
    manifest_digest: str
    """The linux/amd64 image manifest's own digest."""
    config_digest: str
    config_size: int
    layers: tuple[Layer, ...]


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{what} is not JSON") from exc
    if not isinstance(document, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return document


def _check(desc: Any, what: str) -> tuple[str, int, str]:
    """(digest, size, media type) of a descriptor, or a RegistryError naming ``what``."""
    ok = (
        isinstance(desc, dict)
        and isinstance(desc.get("digest"), str)
        and len(desc["digest"]) == 71
        and desc["digest"].startswith("sha256:")
        and all(c in "0123456789abcdef" for c in desc["digest"][7:])
        and isinstance(desc.get("size"), int)
        and not isinstance(desc.get("size"), bool)
        and desc["size"] >= 0
        and isinstance(desc.get("mediaType", ""), str)
    )
    if not ok:
        raise RegistryError(f"{what} is malformed (a sha256 digest, a size and a media type)")
    return desc["digest"], desc["size"], desc.get("mediaType", "")


def kind_of(document: dict[str, Any]) -> Kind | None:
    """``"pyro"`` for a pyro environment artifact, ``"image"`` for a container image, None
    for anything else (an index is neither: follow it first)."""
    config = document.get("config")
    media = config.get("mediaType") if isinstance(config, dict) else None
    if document.get("artifactType") == PYRO_ARTIFACT or media == PYRO_CONFIG:
        return "pyro"
    if media in IMAGE_CONFIGS:
        return "image"
    return None


def is_index(document: dict[str, Any]) -> bool:
    return document.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or (
        "manifests" in document and "config" not in document
    )


def pick_platform(document: dict[str, Any], ref: OciRef) -> str:
    """The digest of the linux/amd64 manifest an index lists.

    Raises:
        RegistryError: the index is malformed or has no linux/amd64 image.
    """
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        raise RegistryError(f"the image index of {ref} lists no manifests")
    seen = []
    for number, entry in enumerate(manifests[:1024]):
        digest, _, _ = _check(entry, f"manifest {number} in the image index of {ref}")
        platform = entry.get("platform")
        if not isinstance(platform, dict):
            continue
        os_arch = (platform.get("os"), platform.get("architecture"))
        seen.append("/".join(str(part) for part in os_arch))
        if os_arch == PLATFORM:
            return digest
    raise RegistryError(
        f"the image index of {ref} has no linux/amd64 image (it has: "
        f"{', '.join(sorted(set(seen))[:8]) or 'none with a platform'})",
        "pyro guests are x86-64 Linux; push a linux/amd64 image",
    )


def manifest_kind(data: bytes, ref: OciRef) -> Kind:
    """What the manifest bytes ``ref`` answered with describe; an index counts as an image.

    Raises:
        RegistryError: not JSON, or neither a pyro artifact nor an image.
    """
    document = _json(data, f"the manifest of {ref}")
    if is_index(document):
        return "image"
    kind = kind_of(document)
    if kind is None:
        raise RegistryError(
            f"{ref} is not a pyro environment or a container image "
            f"(config media type {_config_type(document)!r})",
            "point at an image ('docker push') or an artifact pushed with 'pyro env push'",
        )
    return kind


def _config_type(document: dict[str, Any]) -> str:
    config = document.get("config")
    media = config.get("mediaType") if isinstance(config, dict) else None
    return str(media)[:100]


def image_manifest(client: RegistryClient, *, limit: int) -> ImageManifest:
    """The linux/amd64 manifest of the image ``client.ref`` names, checked and bounded.

    ``limit`` bounds the layers' declared sizes together, before any is fetched.

    Raises:
        RegistryError: not an image, no amd64 image, a layer type pyro cannot unpack, too
            many layers, or more bytes declared than ``limit``.
    """
    ref = client.ref
    top, data = client.get_manifest()
    document = _json(data, f"the manifest of {ref}")
    digest = top
    if is_index(document):
        digest = pick_platform(document, ref)
        digest, data = client.get_manifest(digest)
        document = _json(data, f"the linux/amd64 manifest of {ref}")
        if is_index(document):
            raise RegistryError(f"the image index of {ref} points at another index", _NESTED)
    if document.get("mediaType", MANIFEST_MEDIA_TYPE) not in (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST):
        raise RegistryError(f"the manifest of {ref} has media type {document['mediaType']!r}")
    if kind_of(document) != "image":
        raise RegistryError(
            f"{ref} is not a container image (config media type {_config_type(document)!r})"
        )
    config_digest, config_size, _ = _check(document.get("config"), f"the config of {ref}")
    if config_size > MAX_IMAGE_CONFIG_BYTES:
        raise RegistryError(f"the image config of {ref} is implausibly large ({config_size})")
    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list):
        raise RegistryError(f"the manifest of {ref} has no layers list")
    if len(raw_layers) > MAX_LAYERS:
        raise RegistryError(f"{ref} has {len(raw_layers)} layers, more than {MAX_LAYERS}")
    layers = []
    for number, entry in enumerate(raw_layers):
        layer_digest, size, media = _check(entry, f"layer {number} of {ref}")
        compression = LAYER_TYPES.get(media)
        if compression is None:
            raise RegistryError(
                f"layer {number} of {ref} has an unsupported layer media type {media[:100]!r}",
                "pyro unpacks tar layers, plain or compressed with gzip or zstd",
            )
        layers.append(Layer(layer_digest, size, compression))
    total = sum(layer.size for layer in layers)
    if total > limit:
        raise RegistryError(
            f"{ref} declares {total} bytes of layers, more than the pull limit of "
            f"{limit >> 20} MiB; refused before downloading",
            "if the image really is that large, raise PYRO_PULL_MAX_MB",
        )
    return ImageManifest(top, digest, config_digest, config_size, tuple(layers))


_NESTED = "point at an image or a one-level index"


def image_config(client: RegistryClient, manifest: ImageManifest, work: Path) -> dict[str, Any]:
    """The image's config blob (digest-checked, at most 1 MiB) as a JSON object.

    Raises:
        RegistryError: it cannot be fetched, does not match its digest, or is not JSON.
    """
    path = work / "image-config.json"
    client.fetch_blob(manifest.config_digest, manifest.config_size, path, small=True)
    config = _json(path.read_bytes(), f"the image config of {client.ref}")
    path.unlink()
    return config


def fetch_layer(
    client: RegistryClient,
    layer: Layer,
    dest: Path,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Download one layer blob, digest- and size-checked (see ``fetch_blob``).

    Raises:
        RegistryError: unreachable, too slow, or the bytes do not match.
    """
    client.fetch_blob(layer.digest, layer.size, dest, progress)
