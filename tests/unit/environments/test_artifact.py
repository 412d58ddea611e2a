"""The artifact format: manifest checks and streamed (de)compression."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pyro.environments import artifact
from pyro.errors import RegistryError
from pyro.oci.reference import parse_oci_ref

REF = parse_oci_ref("oci://127.0.0.1:5000/pyro/x:1")
D = "sha256:" + "a" * 64


def layer(role: str, title: str, media: str = "+zstd") -> dict[str, Any]:
    base = (
        "application/vnd.pyro.kernel.v1"
        if role == "kernel"
        else "application/vnd.pyro.rootfs.ext4.v1"
    )
    return {
        "mediaType": base + media,
        "digest": D,
        "size": 10,
        "annotations": {
            artifact.TITLE: title,
            artifact.ROLE: role,
            artifact.UNCOMPRESSED_DIGEST: D,
            artifact.UNCOMPRESSED_SIZE: "20",
        },
    }


def manifest(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "artifactType": artifact.ARTIFACT_TYPE,
        "config": {"mediaType": artifact.CONFIG_MEDIA_TYPE, "digest": D, "size": 5},
        "layers": [layer("rootfs", "rootfs.ext4"), layer("kernel", "vmlinux")],
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_parse_manifest_orders_layers_kernel_first() -> None:
    doc = artifact.parse_manifest(manifest(), REF)
    assert [lay["annotations"][artifact.ROLE] for lay in doc["layers"]] == ["kernel", "rootfs"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (
            manifest(
                artifactType="application/vnd.oci.image.config.v1+json",
                config={
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": D,
                    "size": 2,
                },
            ),
            "not a pyro environment",
        ),
        (manifest(layers=[layer("kernel", "vmlinux")]), "lacks the rootfs"),
        (
            manifest(
                config={"mediaType": artifact.CONFIG_MEDIA_TYPE, "digest": "md5:x", "size": 1}
            ),
            "malformed",
        ),
        (
            manifest(
                config={"mediaType": artifact.CONFIG_MEDIA_TYPE, "digest": D, "size": 1 << 30}
            ),
            "implausibly large",
        ),
    ],
)
def test_parse_manifest_rejects(data: bytes, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        artifact.parse_manifest(data, REF)


def test_compress_then_decompress_roundtrip(tmp_path: Path) -> None:
    source = tmp_path / "in"
    payload = os.urandom(3 << 20) + b"\0" * (5 << 20)
    source.write_bytes(payload)
    digest, size = artifact._compress(source, tmp_path / "blob")
    blob = (tmp_path / "blob").read_bytes()
    assert (digest, size) == ("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    assert size < len(payload)
    lay = layer("rootfs", "rootfs.ext4")
    lay["annotations"][artifact.UNCOMPRESSED_DIGEST] = (
        "sha256:" + hashlib.sha256(payload).hexdigest()
    )
    lay["annotations"][artifact.UNCOMPRESSED_SIZE] = str(len(payload))
    artifact._decompress(tmp_path / "blob", tmp_path / "out", lay, REF)
    assert (tmp_path / "out").read_bytes() == payload


def test_gzip_layers_are_accepted(tmp_path: Path) -> None:
    payload = b"kernel" * 1000
    (tmp_path / "blob").write_bytes(gzip.compress(payload))
    lay = layer("kernel", "vmlinux", media="+gzip")
    lay["annotations"][artifact.UNCOMPRESSED_DIGEST] = (
        "sha256:" + hashlib.sha256(payload).hexdigest()
    )
    lay["annotations"][artifact.UNCOMPRESSED_SIZE] = str(len(payload))
    artifact._decompress(tmp_path / "blob", tmp_path / "out", lay, REF)
    assert (tmp_path / "out").read_bytes() == payload


@pytest.mark.parametrize("claimed_size", [10, 100_000])
def test_decompressed_content_must_match(tmp_path: Path, claimed_size: int) -> None:
    payload = b"x" * 50_000
    (tmp_path / "blob").write_bytes(zstandard.ZstdCompressor().compress(payload))
    lay = layer("rootfs", "rootfs.ext4")
    lay["annotations"][artifact.UNCOMPRESSED_DIGEST] = (
        "sha256:" + hashlib.sha256(payload).hexdigest()
    )
    lay["annotations"][artifact.UNCOMPRESSED_SIZE] = str(claimed_size)
    with pytest.raises(RegistryError, match="uncompressed digest"):
        artifact._decompress(tmp_path / "blob", tmp_path / "out", lay, REF)
    assert (tmp_path / "out").stat().st_size <= claimed_size


def test_garbage_layer_does_not_decompress(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"definitely not zstd")
    with pytest.raises(RegistryError, match="does not decompress"):
        artifact._decompress(
            tmp_path / "blob", tmp_path / "out", layer("rootfs", "rootfs.ext4"), REF
        )


def test_push_to_a_digest_is_refused(tmp_path: Path) -> None:
    ref = parse_oci_ref(f"oci://127.0.0.1:9/x@{D}")
    with pytest.raises(RegistryError, match="immutable"):
        artifact.push_environment({}, tmp_path, ref, tmp_path)


def test_zero_runs_become_holes(tmp_path: Path) -> None:
    payload = os.urandom(4096) + b"\0" * (16 << 20) + os.urandom(4096) + b"\0" * (3 << 20)
    (tmp_path / "blob").write_bytes(zstandard.ZstdCompressor().compress(payload))
    lay = layer("rootfs", "rootfs.ext4")
    lay["annotations"][artifact.UNCOMPRESSED_DIGEST] = (
        "sha256:" + hashlib.sha256(payload).hexdigest()
    )
    lay["annotations"][artifact.UNCOMPRESSED_SIZE] = str(len(payload))
    artifact._decompress(tmp_path / "blob", tmp_path / "out", lay, REF)
    out = tmp_path / "out"
    assert out.read_bytes() == payload
    assert out.stat().st_blocks * 512 < len(payload) // 2  # sparse: zeros were not written
