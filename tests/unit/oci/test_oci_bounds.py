"""A registry that sends too much, or too slowly, is stopped (issue #17, item 5).

A lying registry on 127.0.0.1 (tests/helpers/fake_registry.py) streams an endless
manifest, a blob longer than declared, claims a terabyte, trickles. Each must end in a
clear RegistryError, with host memory and disk bounded and nothing left behind. The fake
stops on its own after a bound too, so old code that never hangs up still finishes.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_registry import FakeRegistry, artifact, fake_registry, reply

from pyro.environments import artifact as oci_artifact
from pyro.environments.artifact import pull_environment
from pyro.errors import RegistryError, UsageError
from pyro.oci import client as oci_client
from pyro.oci.client import RegistryClient
from pyro.oci.reference import parse_oci_ref

pytestmark = pytest.mark.hostile

MiB = 1 << 20
MANIFEST_PATH = "/v2/pyro/x/manifests/1"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeRegistry]:
    for name in ("PYRO_REGISTRY_USERNAME", "PYRO_REGISTRY_PASSWORD", "PYRO_PULL_MAX_MB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    with fake_registry() as registry:
        yield registry


def pull(fake: FakeRegistry, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    pull_environment(parse_oci_ref(fake.ref()), work)
    return work


def files_under(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def test_endless_manifest_is_cut_at_the_cap_with_bounded_memory(
    fake: FakeRegistry, tmp_path: Path
) -> None:
    fake.routes["GET", MANIFEST_PATH] = fake.stream(b"{" * MiB, limit=96 * MiB)

    tracemalloc.start()
    try:
        with pytest.raises(RegistryError, match=r"manifest 1 of .* is larger than 4194304 bytes"):
            pull(fake, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 24 * MiB, f"peak Python memory {peak} bytes"
    assert [s.finished().cut for s in fake.streamed] == [True]  # once: a cap is not retried
    assert fake.streamed[0].sent < 96 * MiB
    assert fake.blob_requests() == []


def test_manifest_announcing_a_huge_length_is_refused_before_reading(
    fake: FakeRegistry, tmp_path: Path
) -> None:
    fake.routes["GET", MANIFEST_PATH] = fake.stream(
        b"{", limit=1, headers={"Content-Length": str(1 << 40)}
    )
    with pytest.raises(RegistryError, match=r"announces 1099511627776 bytes"):
        pull(fake, tmp_path)
    assert len([s for s in fake.seen if s.path == MANIFEST_PATH]) == 1


def test_deeply_nested_manifest_is_a_registry_error(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.routes["GET", MANIFEST_PATH] = reply(200, b"[" * 200_000)
    with pytest.raises(RegistryError, match="is not JSON"):
        pull(fake, tmp_path)


def test_blob_longer_than_declared_stops_at_the_declared_size(
    fake: FakeRegistry, tmp_path: Path
) -> None:
    manifest, roles, blobs = artifact()
    fake.serve_artifact(manifest, blobs)
    kernel = blobs[roles["kernel"]]
    # The right bytes, then 64 MiB more than the manifest declares.
    fake.routes["GET", f"/v2/pyro/x/blobs/{roles['kernel']}"] = fake.stream(
        kernel + b"\0" * (64 * MiB), limit=len(kernel) + 64 * MiB
    )
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(RegistryError, match=rf"longer than the {len(kernel)} bytes"):
        pull_environment(parse_oci_ref(fake.ref()), work)

    answer = fake.streamed[0].finished()
    assert answer.cut and answer.sent < len(kernel) + 64 * MiB
    assert files_under(work) == {"config.json": len(blobs[next(iter(blobs))])}


def test_blob_announcing_more_than_declared_is_refused_unread(
    fake: FakeRegistry, tmp_path: Path
) -> None:
    body = b"x" * 1000
    digest = "sha256:" + hashlib.sha256(body[:10]).hexdigest()
    fake.routes["GET", f"/v2/pyro/x/blobs/{digest}"] = reply(200, body)
    client = RegistryClient(parse_oci_ref(fake.ref()))
    with pytest.raises(RegistryError, match=r"longer than the 10 bytes .* announces 1000 bytes"):
        client.fetch_blob(digest, 10, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


def _declare(role: str, key: str, value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        for layer in document["layers"]:
            if layer["annotations"]["dev.pyro.role"] == role:
                if key == "size":
                    layer["size"] = value
                else:
                    layer["annotations"][key] = value

    return change


@pytest.mark.parametrize(
    ("key", "value", "verb"),
    [
        ("size", 1 << 40, "download"),
        ("dev.pyro.uncompressed.size", str(1 << 40), "unpack to"),
    ],
    ids=["compressed-1TiB", "uncompressed-1TiB"],
)
def test_a_terabyte_claim_is_refused_before_any_blob_is_fetched(
    fake: FakeRegistry, tmp_path: Path, key: str, value: Any, verb: str
) -> None:
    manifest, roles, blobs = artifact(change=_declare("rootfs", key, value))
    fake.serve_artifact(manifest, blobs)
    # Old code would stream this; 32 MiB, then the fake gives up.
    fake.routes["GET", f"/v2/pyro/x/blobs/{roles['rootfs']}"] = fake.stream(
        b"\1" * MiB, limit=32 * MiB
    )
    with pytest.raises(RegistryError, match=rf"declares \d+ bytes to {verb}, more than the pull"):
        pull(fake, tmp_path)
    assert fake.blob_requests() == []
    assert not (tmp_path / "work" / "staged").exists()


def test_the_pull_limit_is_configurable(
    fake: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, _, blobs = artifact(rootfs=bytes(range(256)) * 8192)  # 2 MiB unpacked
    fake.serve_artifact(manifest, blobs)
    monkeypatch.setenv("PYRO_PULL_MAX_MB", "1")
    with pytest.raises(RegistryError, match="more than the pull limit of 1 MiB") as caught:
        pull(fake, tmp_path)
    assert "PYRO_PULL_MAX_MB" in caught.value.hint
    monkeypatch.setenv("PYRO_PULL_MAX_MB", "lots")
    with pytest.raises(UsageError, match="PYRO_PULL_MAX_MB"):
        pull(fake, tmp_path / "again")
    monkeypatch.setenv("PYRO_PULL_MAX_MB", "3")
    assert files_under(pull(fake, tmp_path / "ok"))["staged/rootfs.ext4"] == 2 * MiB


def test_trickling_manifest_is_ended_by_its_deadline(
    fake: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oci_client, "DOCUMENT_SECONDS", 0.5, raising=False)
    fake.routes["GET", MANIFEST_PATH] = fake.stream(b"{", limit=200, delay=0.05, seconds=10)
    with pytest.raises(RegistryError, match=r"did not arrive within 0.5 s"):
        pull(fake, tmp_path)
    assert len(fake.streamed) == 1  # a deadline is not retried


def test_trickling_blob_is_ended_by_the_rate_floor(
    fake: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oci_client, "RATE_WINDOW", 0.5, raising=False)
    monkeypatch.setattr(oci_client, "RATE_MIN_BYTES", 4096, raising=False)
    manifest, roles, blobs = artifact(kernel=bytes(range(256)) * 4096)  # incompressible-ish
    fake.serve_artifact(manifest, blobs)
    kernel = blobs[roles["kernel"]]
    fake.routes["GET", f"/v2/pyro/x/blobs/{roles['kernel']}"] = fake.stream(
        kernel[:10], limit=len(kernel), delay=0.05, seconds=10
    )
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(RegistryError, match=r"below the floor of 4096 bytes per 0.5 s"):
        pull_environment(parse_oci_ref(fake.ref()), work)
    assert "layer.blob" not in files_under(work)


def test_endless_answer_to_a_push_is_cut(fake: FakeRegistry) -> None:
    fake.routes["PUT", MANIFEST_PATH] = fake.stream(b"x" * MiB, limit=64 * MiB)
    client = RegistryClient(parse_oci_ref(fake.ref()))
    with pytest.raises(RegistryError, match="larger than 4194304 bytes"):
        client.put_manifest(b"{}", "1")
    assert fake.streamed[0].finished().cut


def test_endless_token_answer_is_cut(fake: FakeRegistry, tmp_path: Path) -> None:
    challenge = f'Bearer realm="http://{fake.address}/token",service="fake",scope="x"'
    fake.routes["GET", MANIFEST_PATH] = reply(401, b"", {"WWW-Authenticate": challenge})
    fake.routes["GET", "/token"] = fake.stream(b'{"token":"' + b"a" * MiB, limit=64 * MiB)
    with pytest.raises(RegistryError, match=r"token answer .* larger than 4194304 bytes"):
        pull(fake, tmp_path)
    assert fake.streamed[0].finished().cut


def test_config_blob_is_capped_by_the_manifest(fake: FakeRegistry, tmp_path: Path) -> None:
    def huge_config(document: dict[str, Any]) -> None:
        document["config"]["size"] = oci_artifact.MAX_CONFIG_BYTES + 1

    manifest, _, blobs = artifact(change=huge_config)
    fake.serve_artifact(manifest, blobs)
    with pytest.raises(RegistryError, match=r"config blob .* implausibly large"):
        pull(fake, tmp_path)
    assert fake.blob_requests() == []


def test_a_redirect_body_is_never_read(fake: FakeRegistry, tmp_path: Path) -> None:
    manifest, roles, blobs = artifact()
    fake.serve_artifact(manifest, blobs)
    kernel_path = f"/v2/pyro/x/blobs/{roles['kernel']}"
    fake.routes["GET", "/storage/kernel"] = fake.routes["GET", kernel_path]
    fake.routes["GET", kernel_path] = fake.stream(
        b"z" * MiB, limit=64 * MiB, code=302, headers={"Location": "/storage/kernel"}
    )

    tracemalloc.start()
    try:
        files = files_under(pull(fake, tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert files["staged/vmlinux"] == len(b"kernel " * 100)
    assert peak < 24 * MiB, f"peak Python memory {peak} bytes"
    assert fake.streamed[0].finished().cut


def test_endless_redirects_are_refused(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.routes["GET", MANIFEST_PATH] = reply(302, b"", {"Location": MANIFEST_PATH})
    with pytest.raises(RegistryError, match="more than 5 times"):
        pull(fake, tmp_path)
    assert len(fake.seen) == 6
