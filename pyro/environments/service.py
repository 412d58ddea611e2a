"""Environment operations the CLI, SDK and MCP server call: list, inspect, pull, build, push, prune.

A reference is a catalog name (``debian:12``), a path to an Environment spec, or an
``oci://`` reference. Catalog names and specs are installed under their metadata name;
``oci://`` references under the reference as written, and nothing else: the name an
artifact's config carries is the registry's claim, so it never re-points a catalog name
(which changes only through its own entry: its configured source, or ``env build``). A
claimed name that disagrees with what was asked for is reported as a warning. Pulls and
builds hold the name's file lock, so concurrent callers do the work once: the second
waits, then finds the environment installed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.environments.cache.prune import prune as prune_cache
from pyro.environments.cache.store import Cache, Install, PrunedItem
from pyro.environments.status import (
    EnvironmentDetails,
    EnvironmentStatus,
    Progress,
    ProgressEvent,
)
from pyro.errors import (
    BuildError,
    CacheError,
    EnvironmentInvalidError,
    EnvironmentNotFoundError,
    UsageError,
)
from pyro.spec.ref import CatalogRef, OciRef, SpecPathRef, parse_environment_ref

__all__ = [
    "EnvironmentDetails",
    "EnvironmentService",
    "EnvironmentStatus",
    "Progress",
    "ProgressEvent",
    "build",
    "inspect",
    "list_environments",
    "prune",
    "pull",
    "push",
]

if TYPE_CHECKING:  # the catalog (and its spec loader) is imported only when needed
    from pyro.environments.catalog import CatalogEntry
    from pyro.spec.environment import EnvironmentSpec, EnvironmentSpecBody


@dataclass(frozen=True)
class _Target:
    key: str  # the name the cache knows it by
    entry: CatalogEntry | None
    oci: OciRef | None
    insecure: bool


class EnvironmentService:
    """Environment operations over one cache (default ``$PYRO_CACHE_DIR``)."""

    def __init__(self, cache: Cache | None = None) -> None:
        self.cache = cache if cache is not None else Cache()

    # -- reading -------------------------------------------------------------------------

    def list_environments(self) -> list[EnvironmentStatus]:
        """The catalog plus everything installed, each with its cache state, sorted by name.

        Raises:
            SpecError: a packaged spec is invalid.
            UsageError: $PYRO_ENV_REGISTRY is malformed.
        """
        from pyro.environments.catalog import catalog

        entries = catalog()
        names = sorted(set(entries) | set(self.cache.names()))
        return [self._status(name, entries.get(name)) for name in names]

    def inspect(self, value: str, *, verify: bool = False) -> EnvironmentDetails:
        """What the cache holds for ``value``; ``verify`` hashes every artifact.

        Raises:
            UsageError: ``value`` is not a valid reference.
            EnvironmentNotFoundError: neither installed nor in the catalog.
            SpecError: ``value`` is a spec path that cannot be loaded.
        """
        target = self._target(value, must_exist=True)
        status = self._status(target.key, target.entry)
        data = status.model_dump()
        install = self.cache.lookup(target.key)
        if verify and status.state != "not-installed":
            try:
                install = self.cache.verify(target.key)
            except EnvironmentInvalidError as exc:  # reported as a state, not raised
                data.update(state="invalid", reason=exc.summary)
                install = None
        if install is not None:
            data.update(kernel=str(install.kernel), rootfs=str(install.rootfs))
            data.update(manifest=install.manifest, verified=verify)
        return EnvironmentDetails(**data)

    def _status(self, name: str, entry: CatalogEntry | None) -> EnvironmentStatus:
        status = self.cache.status(name)
        install = status.install
        fields: dict[str, Any] = {
            "name": name,
            "state": status.state,
            "reason": status.reason,
            "in_catalog": entry is not None,
            "version": entry.spec.spec.version if entry is not None else None,
            "spec_digest": entry.spec_digest if entry is not None else None,
            "source": entry.source if entry is not None else None,
        }
        if install is not None:
            spec_digest = install.manifest.get("specDigest")
            fields.update(version=install.version, digest=install.digest, path=str(install.dir))
            fields.update(source=install.source or fields["source"])
            if isinstance(spec_digest, str):
                fields.update(spec_digest=spec_digest)
        return EnvironmentStatus(**fields)

    # -- pull and build ------------------------------------------------------------------

    def pull(
        self,
        value: str,
        *,
        insecure: bool = False,
        progress: Progress | None = None,
        base_dir: Path | None = None,
    ) -> Install:
        """Make ``value`` installed and valid: return it at once if it is, else pull or build.

        A catalog entry (or spec) with a ``source`` is pulled from it; one without is built.
        An invalid install is never used: it is replaced. Spec paths are relative to
        ``base_dir`` (default: the working directory).

        Raises:
            UsageError: ``value`` is not a valid reference.
            EnvironmentNotFoundError: not in the catalog and not installed.
            RegistryError: the registry cannot be reached, refuses, or sends bad content.
            BuildError: a build fails.
            CacheError: the cache cannot be written.
        """
        target = self._target(value, must_exist=True, base_dir=base_dir)
        install = self._usable(target)
        if install is None:
            with self.cache.lock(target.key):
                # Someone may have installed it while we waited for the lock.
                install = self._usable(target)
                if install is None:
                    _emit(progress, ProgressEvent("install", target.key))
                    install = self._obtain(target, insecure=insecure, progress=progress)
        _emit(progress, ProgressEvent("ready", target.key, install.digest))
        return install

    def _usable(self, target: _Target) -> Install | None:
        install = self.cache.lookup(target.key)
        if install is None or target.oci is None or target.oci.digest is None:
            return install
        # A digest-pinned reference is satisfied only by exactly that artifact.
        source = install.source or ""
        return install if source.endswith("@" + target.oci.digest) else None

    def _obtain(self, target: _Target, *, insecure: bool, progress: Progress | None) -> Install:
        if target.oci is not None:
            return self._pull_oci(target.key, target.oci, target.insecure or insecure, progress)
        if target.entry is None:
            raise EnvironmentNotFoundError(
                f"environment {target.key!r} is not in the catalog and its install is invalid",
                "pull it again by the oci:// reference it came from, or 'pyro env prune'",
            )
        if target.entry.source is not None:
            from pyro.oci.reference import parse_oci_ref

            return self._pull_oci(
                target.key,
                parse_oci_ref(target.entry.source),
                target.insecure or insecure,
                progress,
            )
        from pyro.environments.catalog import builds_forbidden

        if builds_forbidden():
            raise BuildError(
                f"environment {target.key!r} has no registry to be pulled from, and builds "
                "are off (PYRO_NO_BUILD)",
                "set PYRO_ENV_REGISTRY to the registry your team pushes environments to "
                "('pyro env push'), or unset PYRO_NO_BUILD to build it here",
            )
        _emit(progress, ProgressEvent("build", target.key, "no registry source: building locally"))
        return self._build(target.entry, progress)

    def _pull_oci(
        self, key: str, ref: OciRef, insecure: bool, progress: Progress | None
    ) -> Install:
        from pyro.environments.artifact import pull_environment
        from pyro.oci.client import RegistryClient
        from pyro.oci.image import manifest_kind
        from pyro.oci.reference import pinned

        def bytes_moved(what: str, done: int, total: int) -> None:
            _emit(progress, ProgressEvent("download", key, what, done, total))

        manifest = RegistryClient(ref, insecure=insecure).get_manifest()
        if manifest_kind(manifest[1], ref) == "image":
            return self._convert(key, pinned(ref, manifest[0]), insecure, progress)
        with self.cache.scratch() as work:
            try:
                pulled = pull_environment(
                    ref, work, insecure=insecure, progress=bytes_moved, manifest=manifest
                )
            except OSError as exc:  # writing the download: a full disk, a read-only cache
                raise CacheError(
                    f"cannot store {ref} in the cache at {self.cache.root}: {exc.strerror or exc}",
                    "free disk space there (or point $PYRO_CACHE_DIR elsewhere), then pull again",
                ) from exc
            config = pulled.config
            created = config.get("createdFrom")
            meta: dict[str, Any] = dict(created) if isinstance(created, dict) else {}
            meta.update(
                name=config.get("name", key),
                version=config.get("version", "0.0.0"),
                specDigest=config.get("specDigest"),
                defaults=config.get("defaults"),
                source=str(pinned(ref, pulled.digest)),
            )
            # Installed under ``key`` only: the name in the config is the registry's word.
            install = self.cache.install(key, pulled.staged_dir, meta, digests=pulled.digests)
        warning = _name_warning(key, ref, config.get("name"), self._known_name)
        if warning is None:
            return install
        _emit(progress, ProgressEvent("warning", key, warning))
        return dataclasses.replace(install, warnings=(warning,))

    def _convert(
        self,
        key: str,
        ref: OciRef,
        insecure: bool,
        progress: Progress | None,
        entry: CatalogEntry | None = None,
    ) -> Install:
        """Install the container image ``ref`` (pinned to its digest) as ``key``.

        Keyed by the image's digest: an image converted before, under any reference, is
        linked rather than converted again (unless ``entry``, the Environment spec being
        built, whose name and digest the install must carry). Conversion happens in a work
        dir; only a whole environment is ever installed.
        """
        from pyro.environments.image.convert import convert_image

        assert ref.digest is not None
        for name in self.cache.names() if entry is None else ():
            other = self.cache.lookup(name)
            if other is not None and _image_digest(other) == ref.digest:
                _emit(progress, ProgressEvent("build", key, f"image {ref.digest[:19]} cached"))
                return self.cache.install_from(key, other)

        def bytes_moved(what: str, done: int, total: int) -> None:
            _emit(progress, ProgressEvent("download", key, what, done, total))

        def say(line: str) -> None:
            _emit(progress, ProgressEvent("build", key, line))

        say(f"converting container image {ref}")
        body = entry.spec.spec if entry is not None else None
        with self.cache.scratch() as work:
            converted = convert_image(
                ref,
                work / "out",
                work,
                cache_root=self.cache.root,
                insecure=insecure,
                progress=bytes_moved,
                log=say,
                files=body.files if body is not None else (),
                spec_dir=entry.spec_dir if entry is not None else None,
            )
            meta: dict[str, Any] = dict(converted.metadata)
            if entry is not None and body is not None and body.setup is not None:
                from pyro.environments.image.setup import run_setup

                meta["setup"] = run_setup(
                    body.setup,
                    work / "out",
                    work,
                    name=entry.name,
                    vcpus=body.defaults.vcpus,
                    memory_mib=body.defaults.memory_mib,
                    cache_root=self.cache.root,
                    log=say,
                )
            if body is not None and (body.files or body.setup is not None):
                meta["buildKey"] = build_key(converted.manifest_digest, meta, body)
            image_defaults = converted.defaults.to_dict()
            if entry is None:
                meta.update(name=key, version="0.0.0", source=str(ref))
                meta.update(defaults={"vcpus": 1, "memoryMiB": 512, "image": image_defaults})
            else:
                body = entry.spec.spec
                meta.update(name=entry.name, version=body.version, specDigest=entry.spec_digest)
                resources = {"vcpus": body.defaults.vcpus, "memoryMiB": body.defaults.memory_mib}
                meta.update(defaults={**resources, "image": image_defaults})
            return self.cache.install(key, work / "out", meta)

    def _build_from_image(self, entry: CatalogEntry, progress: Progress | None) -> Install:
        """An Environment spec with ``from: {image: REF}``: the image, converted, installed
        under the spec's name."""
        from pyro.oci.client import RegistryClient
        from pyro.oci.image import manifest_kind
        from pyro.oci.reference import parse_oci_ref, pinned

        image = entry.spec.spec.from_
        assert image is not None
        ref = parse_oci_ref(image.ref)
        digest, data = RegistryClient(ref, insecure=image.insecure).get_manifest()
        if manifest_kind(data, ref) != "image":
            raise UsageError(
                f"{entry.name}: from.image {image.image!r} is a pyro environment artifact, "
                "not a container image",
                "name it in spec.source instead (or run it as oci://…)",
            )
        return self._convert(entry.name, pinned(ref, digest), image.insecure, progress, entry)

    def build(
        self,
        value: str,
        *,
        spec: EnvironmentSpec | None = None,
        base_dir: Path | None = None,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        force: bool = False,
    ) -> Install:
        """Build ``value`` (a catalog name or spec path) from source and install it.

        ``spec`` is the already loaded Environment spec ``value`` names, if the caller has
        it; spec paths are relative to ``base_dir`` (default: the working directory).
        A valid install built from the same inputs (spec digest) is kept unless ``force``:
        nothing changed, nothing to build.

        Raises:
            UsageError: ``value`` is an oci:// reference or not a valid reference.
            EnvironmentNotFoundError: no such catalog entry.
            SpecError: the spec cannot be loaded.
            BuildError: the build fails.
            CacheError: the cache cannot be written.
        """
        target = self._target(value, must_exist=True, spec=spec, base_dir=base_dir)
        if target.entry is None:
            raise UsageError(
                f"cannot build {value!r}: only catalog names and spec files can be built",
                "use 'pyro env pull' for oci:// references",
            )
        with self.cache.lock(target.key):
            current = None if force else self.cache.lookup(target.key)
            if (
                current is not None
                and current.manifest.get("specDigest") == target.entry.spec_digest
                and _same_image(target.entry, current)
            ):
                install = current
            else:
                _emit(progress, ProgressEvent("install", target.key, "building"))
                install = self._build(target.entry, progress, log)
        _emit(progress, ProgressEvent("ready", target.key, install.digest))
        return install

    def _build(
        self,
        entry: CatalogEntry,
        progress: Progress | None,
        log: Callable[[str], None] | None = None,
    ) -> Install:
        from pyro.environments.build.builder import build_environment

        if entry.spec.spec.from_ is not None:
            return self._build_from_image(entry, progress)

        def say(line: str) -> None:
            if log is not None:
                log(line)
            _emit(progress, ProgressEvent("build", entry.name, line))

        with self.cache.scratch() as work:
            built = build_environment(entry, work / "out", cache_root=self.cache.root, log=say)
            meta = dict(built.to_dict())
            defaults = entry.spec.spec.defaults
            meta.update(defaults={"vcpus": defaults.vcpus, "memoryMiB": defaults.memory_mib})
            return self.cache.install(entry.name, work / "out", meta)

    # -- push and prune ------------------------------------------------------------------

    def push(
        self, name: str, ref: str, *, insecure: bool = False, progress: Progress | None = None
    ) -> str:
        """Verify the install of ``name`` fully, push it to ``ref``; the manifest digest.

        Raises:
            UsageError: ``ref`` is not an oci:// reference.
            EnvironmentInvalidError: ``name`` is not installed or fails verification.
            RegistryError: the registry refuses or cannot be reached.
        """
        from pyro.environments.artifact import push_environment
        from pyro.oci.reference import parse_oci_ref

        target_ref = parse_oci_ref(ref)
        key = self._target(name, must_exist=False).key
        install = self.cache.verify(key)

        def bytes_moved(what: str, done: int, total: int) -> None:
            _emit(progress, ProgressEvent("upload", key, what, done, total))

        with self.cache.scratch() as work:
            return push_environment(
                install.manifest,
                install.dir,
                target_ref,
                work,
                insecure=insecure,
                progress=bytes_moved,
            )

    def prune(self) -> list[PrunedItem]:
        """Remove invalid and unreferenced installs and leftovers of interrupted runs.

        Raises:
            CacheError: the cache cannot be read.
        """
        return prune_cache(self.cache)

    # -- references ----------------------------------------------------------------------

    def _known_name(self, name: str) -> bool:
        """Whether ``name`` is a catalog entry or installed (invalid counts) here."""
        from pyro.environments.catalog import catalog
        from pyro.errors import PyroError

        try:
            if name in catalog():
                return True
        except PyroError:
            return True  # cannot tell: say so rather than stay silent
        return self.cache.status(name).state != "not-installed"

    def _target(
        self,
        value: str,
        *,
        must_exist: bool,
        spec: EnvironmentSpec | None = None,
        base_dir: Path | None = None,
    ) -> _Target:
        try:
            ref = parse_environment_ref(value)
        except ValueError as exc:
            raise UsageError(
                f"environment {value!r} {exc}",
                "use a catalog name (see 'pyro env list'), a spec path, or oci://REGISTRY/REPO:TAG",
            ) from exc
        if isinstance(ref, OciRef):
            return _Target(str(ref), None, ref, False)
        from pyro.environments import catalog

        if isinstance(ref, SpecPathRef):
            path = (base_dir or Path.cwd()) / ref.path
            if spec is not None:
                entry = catalog.entry_from_spec(spec, path.parent)
            else:
                entry = catalog.entry_from_path(path)
            return _Target(entry.name, entry, None, _source_insecure(entry))
        assert isinstance(ref, CatalogRef)
        known = catalog.catalog().get(ref.name)
        if spec is not None:
            known = catalog.entry_from_spec(spec, base_dir or Path.cwd())
        if known is None and must_exist and self.cache.status(ref.name).state == "not-installed":
            catalog.lookup(ref.name)  # raises EnvironmentNotFoundError, suggesting close names
        return _Target(ref.name, known, None, known is not None and _source_insecure(known))


def _image_digest(install: Install, *, plain: bool = True) -> str | None:
    """The container image digest an install was converted from; None for other installs,
    and (``plain``) for those with a spec's files or setup added, which are not the image."""
    created = install.manifest.get("createdFrom")
    image = created.get("image") if isinstance(created, dict) else None
    digest = image.get("digest") if isinstance(image, dict) else None
    if plain and isinstance(created, dict) and ("files" in created or "setup" in created):
        return None
    return digest if isinstance(digest, str) else None


def _same_image(entry: CatalogEntry, install: Install) -> bool:
    """Whether ``install`` was made from the image ``entry``'s ``from`` names now (True for
    specs without one): a tag pushed again is a new image, so the build runs again."""
    image = entry.spec.spec.from_
    if image is None:
        return True
    from pyro.oci.client import RegistryClient
    from pyro.oci.reference import parse_oci_ref

    ref = parse_oci_ref(image.ref)
    digest = ref.digest or RegistryClient(ref, insecure=image.insecure).get_manifest()[0]
    return _image_digest(install, plain=False) == digest


def build_key(manifest_digest: str, meta: dict[str, Any], body: EnvironmentSpecBody) -> str:
    """``sha256:`` of what an image build with files or setup is made from: the image's
    manifest digest, the files' digest and the setup command with its options."""
    from pyro.environments.build.run import sha256_bytes

    files = meta.get("files")
    setup = body.setup.model_dump(mode="json", by_alias=True) if body.setup else None
    key = {
        "manifestDigest": manifest_digest,
        "files": files.get("digest") if isinstance(files, dict) else None,
        "setup": setup,
    }
    return sha256_bytes(json.dumps(key, sort_keys=True, separators=(",", ":")).encode())


def _source_insecure(entry: CatalogEntry) -> bool:
    source = entry.spec.spec.source
    return bool(source is not None and source.insecure)


def _name_warning(
    key: str, ref: OciRef, claimed: object, known: Callable[[str], bool]
) -> str | None:
    """What to tell the user when an artifact calls itself something else than ``key``.

    A catalog entry's pull warns whenever its artifact claims another name. A pull by
    ``oci://`` reference warns when the claimed name is one the user runs by name (in the
    catalog or installed): that name is left alone, and the user should know it.
    """
    if claimed is None or claimed == key:
        return None
    shown = repr(claimed[:80] if isinstance(claimed, str) else claimed)[:90]
    if not key.startswith("oci://"):
        return (
            f"{ref}, the source of {key}, calls itself {shown}; installed as {key} only "
            "(check that the source points at the right artifact)"
        )
    if not (isinstance(claimed, str) and _is_catalog_name(claimed) and known(claimed)):
        return None
    return (
        f"{ref} calls itself {shown}; it is installed only as {key} and does not "
        f"replace {shown} (run it by its oci:// reference)"
    )


def _is_catalog_name(name: str) -> bool:
    try:
        return isinstance(parse_environment_ref(name), CatalogRef)
    except ValueError:
        return False


def _emit(progress: Progress | None, event: ProgressEvent) -> None:
    if progress is not None:
        progress(event)


def list_environments(cache: Cache | None = None) -> list[EnvironmentStatus]:
    """See :meth:`EnvironmentService.list_environments`."""
    return EnvironmentService(cache).list_environments()


def inspect(value: str, *, verify: bool = False, cache: Cache | None = None) -> EnvironmentDetails:
    """See :meth:`EnvironmentService.inspect`."""
    return EnvironmentService(cache).inspect(value, verify=verify)


def pull(value: str, *, cache: Cache | None = None, **options: Any) -> Install:
    """See :meth:`EnvironmentService.pull` (``insecure``, ``progress``, ``base_dir``)."""
    return EnvironmentService(cache).pull(value, **options)


def build(value: str, *, cache: Cache | None = None, **options: Any) -> Install:
    """See :meth:`EnvironmentService.build` (``spec``, ``base_dir``, ``progress``, ``log``)."""
    return EnvironmentService(cache).build(value, **options)


def push(name: str, ref: str, *, insecure: bool = False, cache: Cache | None = None) -> str:
    """See :meth:`EnvironmentService.push`."""
    return EnvironmentService(cache).push(name, ref, insecure=insecure)


def prune(cache: Cache | None = None) -> list[PrunedItem]:
    """See :meth:`EnvironmentService.prune`."""
    return EnvironmentService(cache).prune()
