"""How a cluster run's copy-in files reach the nodes: once, by the object store or the registry.

The controller packs every copy-in source into one tar (streamed to a file). Up to
:func:`artifact_threshold` bytes it travels in Ray's object store, as before; above, it
is pushed as an OCI artifact (one layer, ``artifactType`` :data:`ARTIFACT_TYPE`) to the
repository ``copy-in`` under the environment's own (or ``$PYRO_CLUSTER_ARTIFACT_REPOSITORY``),
and each node pulls it by manifest digest into its own cache, checking the manifest, the
layer's digest and its size against what the controller said, before it is unpacked
with the refusals of every transferred tar (:func:`pyro.cluster.worker.unpack`, with
:func:`copy_in_max_bytes` as its cap). The object store holds a value in memory on every
node that reads it (and in each worker reading it); a registry pull streams to disk, so
large trees go that way (docs/scale-out.md says why the default is what it is).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pyro.errors import PlanError, PyroError, RegistryError, UsageError

ARTIFACT_TYPE = "application/vnd.pyro.copy-in.v1"
LAYER_MEDIA_TYPE = "application/vnd.pyro.copy-in.layer.v1.tar"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
THRESHOLD_ENV = "PYRO_CLUSTER_ARTIFACT_MIN_BYTES"
REPOSITORY_ENV = "PYRO_CLUSTER_ARTIFACT_REPOSITORY"
MAX_ENV = "PYRO_CLUSTER_COPY_IN_MAX_MB"
#: Above this many bytes, a run's copy-in tar travels as an OCI artifact.
DEFAULT_THRESHOLD = 64 * 1024 * 1024
#: The most a node downloads and unpacks for one run's copy-ins.
DEFAULT_MAX_MIB = 4096
_EMPTY = b"{}"
#: A download in progress in a node's cache (see :mod:`pyro.cluster.copyin_cache`).
PARTIAL_PREFIX = ".copy-in-"


def artifact_threshold(environ: Mapping[str, str] = os.environ) -> int:
    """``$PYRO_CLUSTER_ARTIFACT_MIN_BYTES`` (bytes; default 64 MiB).

    Raises:
        UsageError: not a whole number of bytes.
    """
    raw = environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    if not raw.isdigit() or len(raw) > 20:
        raise UsageError(
            f"{THRESHOLD_ENV}={raw!r} is not a number of bytes",
            f"give a whole number (default {DEFAULT_THRESHOLD}); copy-ins larger than it "
            "travel as an OCI artifact",
        )
    return int(raw)


def copy_in_max_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """``$PYRO_CLUSTER_COPY_IN_MAX_MB`` in bytes (default 4 GiB); a bad value: the default."""
    raw = environ.get(MAX_ENV, "").strip()
    return (int(raw) if raw.isdigit() and len(raw) < 9 else DEFAULT_MAX_MIB) * 1024 * 1024


def uses_artifact(size: int, threshold: int) -> bool:
    """Whether a copy-in tar of ``size`` bytes travels as an OCI artifact."""
    return size > threshold


def pack_to(base: Path, names: list[str], dest: Path) -> int:
    """The ``names`` in ``base`` as an uncompressed tar written to ``dest``; its size.

    Each name is resolved, links included, and packed from there: one whose links leave
    ``base`` (``link/key`` with ``link`` -> a folder outside, ``here/..`` with ``here`` ->
    ``.``) is refused as a local copy-in refuses it, before any of its bytes are read.

    Raises:
        GuestPathError: a name resolves outside ``base``.
    """
    from pyro.execute.transfer import host_path_inside

    resolved = {name: host_path_inside(base, name, what="copy-in source") for name in names}
    with tarfile.open(dest, mode="w") as tar:
        for name in sorted(names):
            tar.add(resolved[name], arcname=name)
    return dest.stat().st_size


def repository_for(environment: str, environ: Mapping[str, str] = os.environ) -> str:
    """Where copy-in artifacts go: ``$PYRO_CLUSTER_ARTIFACT_REPOSITORY`` or ``copy-in``
    under the pinned environment's repository (``oci://REGISTRY/REPOSITORY``).

    Raises:
        UsageError: the configured value is not an ``oci://REGISTRY/REPOSITORY``.
    """
    from pyro.oci.reference import parse_oci_ref

    configured = environ.get(REPOSITORY_ENV, "").strip()
    try:
        if configured:
            ref = parse_oci_ref(configured)
            return f"oci://{ref.registry}/{ref.repository}"
    except PyroError as error:
        raise UsageError(
            f"{REPOSITORY_ENV}={configured!r} is not an OCI repository: {error.summary}",
            "give oci://REGISTRY/REPOSITORY, a repository every node can pull from",
        ) from error
    ref = parse_oci_ref(environment)
    return f"oci://{ref.registry}/{ref.repository}/copy-in"


def push(tar: Path, repository: str) -> dict[str, Any]:
    """Push ``tar`` as a copy-in artifact to ``repository``; what a node needs to pull it:
    ``ref`` (``oci://…@sha256:`` of the manifest), ``digest`` and ``size`` of the layer.

    Raises:
        PlanError: the registry refused it or did not answer (nothing was submitted).
    """
    from pyro.environments.cache.files import canonical_json
    from pyro.oci.client import MANIFEST_MEDIA_TYPE, RegistryClient
    from pyro.oci.reference import parse_oci_ref

    size = tar.stat().st_size
    digest = _sha256(tar)
    ref = parse_oci_ref(repository + ":latest")
    empty = "sha256:" + hashlib.sha256(_EMPTY).hexdigest()
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty, "size": len(_EMPTY)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size}],
    }
    try:
        client = RegistryClient(ref)
        client.push_blob(tar, digest, size)
        empty_file = tar.with_name(tar.name + ".empty")
        empty_file.write_bytes(_EMPTY)
        client.push_blob(empty_file, empty, len(_EMPTY))
        manifest = client.put_manifest(canonical_json(document), f"copy-in-{digest[7:23]}")
    except RegistryError as error:
        raise PlanError(
            f"cannot push the run's copy-in files ({size} bytes) to {repository}: {error.summary}",
            f"let every node and this host reach that registry, set {REPOSITORY_ENV}="
            f"oci://REGISTRY/REPOSITORY, or raise {THRESHOLD_ENV} above {size}",
        ) from error
    return {"ref": f"{repository}@{manifest}", "digest": digest, "size": size}


def fetch(descriptor: Mapping[str, Any], cache: Path) -> Path:
    """The copy-in tar ``descriptor`` names, pulled by digest into ``cache`` (once per
    node), every digest and the size checked.

    Raises:
        PyroError: the descriptor, the manifest or the blob is not what the controller
            pushed, or is larger than :func:`copy_in_max_bytes`.
        RegistryError: the registry did not answer or refused.
    """
    ref_text, digest, size = (descriptor.get(k) for k in ("ref", "digest", "size"))
    limit = copy_in_max_bytes()
    if not (
        isinstance(ref_text, str)
        and isinstance(digest, str)
        and _is_digest(digest)
        and isinstance(size, int)
        and size >= 0
    ):
        raise PyroError(
            "the run's copy-in artifact was described wrongly",
            "this is a bug in pyro on the controller",
        )
    if size > limit:
        raise PyroError(
            f"the run's copy-in artifact is {size} bytes, more than this node takes ({limit})",
            f"raise {MAX_ENV} on the node, or copy less into the run",
        )
    target = cache / f"{digest[7:]}.tar"
    if _is_whole(target, digest, size):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with digest_lock(cache, digest):  # one download per digest on a node; others wait
        if not _is_whole(target, digest, size):
            _download(ref_text, digest, size, cache, target)
    return target


def _download(ref_text: str, digest: str, size: int, cache: Path, target: Path) -> None:
    import json

    from pyro.oci.client import RegistryClient
    from pyro.oci.reference import parse_oci_ref

    ref = parse_oci_ref(ref_text)
    client = RegistryClient(ref)
    _, data = client.get_manifest()  # by digest: the bytes are checked against it
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    document = document if isinstance(document, dict) else {}
    layers = document.get("layers")
    layer = layers[0] if isinstance(layers, list) and len(layers) == 1 else {}
    if not (
        isinstance(layer, dict)
        and layer.get("digest") == digest
        and layer.get("size") == size
        and document.get("artifactType") == ARTIFACT_TYPE
    ):
        raise PyroError(
            f"the copy-in artifact {ref_text} is not the one the controller pushed",
            "apply again; do not retag copy-in artifacts",
        )
    fd, partial = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=cache)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # being written: pruning passes over it (copyin_cache)
        client.fetch_blob(digest, size, Path(partial))
        os.replace(partial, target)
    finally:
        os.close(fd)
        Path(partial).unlink(missing_ok=True)


@contextlib.contextmanager
def digest_lock(cache: Path, digest: str) -> Iterator[None]:
    """Hold the node-wide lock on fetching ``digest`` into ``cache`` (blocking).

    The lock file (``.copy-in-HEX.lock``) is removed on release; one a killed worker left is
    swept as a partial download is, and a lock taken on a file removed meanwhile is taken again.
    """
    path = cache / f"{PARTIAL_PREFIX}{digest[7:]}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
        except BaseException:
            os.close(fd)
            raise
        if current != os.fstat(fd).st_ino:  # swept or released before it was ours: again
            os.close(fd)
            continue
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still ours: nobody else can have replaced it
            os.close(fd)
        return


def _is_whole(target: Path, digest: str, size: int) -> bool:
    return target.is_file() and target.stat().st_size == size and _sha256(target) == digest


def _is_digest(value: str) -> bool:
    hexpart = value.removeprefix("sha256:")
    return (
        value.startswith("sha256:")
        and len(hexpart) == 64
        and all(c in "0123456789abcdef" for c in hexpart)
    )


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()
