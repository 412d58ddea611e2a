"""The one confinement rule for host paths named by a caller pyro does not fully trust.

An MCP client (really: the model choosing its tool arguments) is not the host's user. Every
host path such a caller can name goes through :meth:`Root.confine`: resolved with every
symlink followed, it must lie inside one of the root's folders, or the call fails with an
:class:`~pyro.errors.OutsideRootError` before the path is read. That covers a spec file, a
spec's ``files[].source``, an ``environment`` given as a path and the kernel fragment that
Environment names, a task's seed folder, a folder pushed into a task, a host file written into
a task, and an export's output folder.

What a confined caller copies *out* of a guest never goes to a path the caller names:
artifacts land in a folder made for that run alone (:meth:`Root.output_folder`),
``<base>/.pyro-artifacts/<run>-<time>-<random>/``, and so does a task export
(``export-<task>-...``, at the output's path relative to the root), so a target such as
``.git/config``, ``.envrc`` or ``Makefile`` can never replace the user's file of that name.

The SDK applies the rule when asked (``Pyro(confine_to=...)``); the MCP server always does,
with folders chosen by :mod:`pyro.mcp.roots`.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyro.errors import OutsideRootError, UsageError

#: The folder (under the root's first folder) that confined runs' artifact folders go in.
ARTIFACTS_FOLDER = ".pyro-artifacts"


class Root:
    """The host folders a confined caller may name paths in.

    ``folders`` are resolved (symlinks followed) when the root is made and must be existing
    folders; the first is the ``base`` that relative paths start at. A root with no folder
    refuses every host path. ``why`` says who chose these folders and how to change them; it
    ends every refusal's hint.

    Raises:
        UsageError: a folder does not exist or is not a folder.
    """

    def __init__(self, folders: Iterable[str | os.PathLike[str]], *, why: str = "") -> None:
        resolved: list[Path] = []
        for folder in folders:
            text = os.fspath(folder)
            path = Path(os.path.realpath(text)) if "\x00" not in text else None
            if path is None or not path.is_dir():
                raise UsageError(
                    f"the confinement root {text!r} is not an existing folder",
                    "give folders that exist (the root is where host paths may point)",
                )
            if path not in resolved:
                resolved.append(path)
        self.folders: tuple[Path, ...] = tuple(resolved)
        self.why = why or "the caller's host paths are confined to these folders"

    @classmethod
    def of(cls, value: Root | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Root:
        """``value`` if it is a Root, else a Root of the folder(s) it names.

        Raises:
            UsageError: a folder does not exist or is not a folder.
        """
        if isinstance(value, Root):
            return value
        if isinstance(value, str | os.PathLike):
            return cls([value], why="this Pyro was made with confine_to=")
        return cls(value, why="this Pyro was made with confine_to=")

    @property
    def base(self) -> Path | None:
        """Where relative paths start: the first folder (None when there is none)."""
        return self.folders[0] if self.folders else None

    def describe(self) -> str:
        """The folders, for messages."""
        if not self.folders:
            return "no host folder"
        return ", ".join(str(folder) for folder in self.folders)

    def contains(self, path: Path) -> bool:
        """Whether the absolute ``path`` is one of the folders or lies inside one (lexically)."""
        return any(path.is_relative_to(folder) for folder in self.folders)

    def relative(self, path: Path) -> Path:
        """``path`` (confined: inside a folder) relative to the first folder holding it."""
        for folder in self.folders:
            if path.is_relative_to(folder):
                return path.relative_to(folder)
        raise OutsideRootError(f"{path} is outside {self.describe()}", self.hint())

    def hint(self) -> str:
        if not self.folders:
            return self.why
        start = f" (relative paths start at {self.base})" if self.base else ""
        return f"name a path inside {self.describe()}{start}; {self.why}"

    def confine(
        self, value: str | os.PathLike[str], *, what: str, base: Path | None = None
    ) -> Path:
        """THE rule: ``value`` (relative to ``base``, default :attr:`base`) resolved with every
        symlink followed, refused unless it lies inside one of the folders.

        The path need not exist; nothing is read. A refusal names the path as given and the
        folders, never where a symlink pointed.

        Raises:
            OutsideRootError: the path leaves every folder (``..``, an absolute path, a symlink
                anywhere along it), holds a NUL byte, or the root has no folder.
        """
        text = os.fspath(value)
        if "\x00" in text:
            raise OutsideRootError(f"{what} {text!r} is not a valid path (NUL byte)", self.hint())
        start = base if base is not None else self.base
        if start is None or not self.folders:
            raise OutsideRootError(
                f"{what} {text!r} is refused: no host folder is open to this caller", self.hint()
            )
        joined = Path(text) if os.path.isabs(text) else start / text
        real = Path(os.path.realpath(joined))
        if self.contains(real):
            return real
        lexical = Path(os.path.normpath(os.path.abspath(joined)))
        where = self.describe()
        how = (
            f"resolves outside {where} (through a symbolic link)"
            if self.contains(lexical)
            else f"is outside {where}"
        )
        raise OutsideRootError(f"{what} {text!r} {how}", self.hint())

    def environment(self, ref: str, *, base: Path | None = None) -> str:
        """``ref`` as is, unless it names an Environment spec file: then that file, and the
        kernel fragment it names, must be inside the root and not in an artifacts folder
        (a build runs on the host); returns the file's resolved path.

        Raises:
            OutsideRootError: the file or its kernel fragment is outside the root, or inside
                a ``.pyro-artifacts`` folder.
            SpecError: the file (inside the root) is not a valid spec.
        """
        from pyro.spec.ref import SpecPathRef, parse_environment_ref

        try:
            parsed = parse_environment_ref(ref)
        except ValueError:
            return ref  # not a path; whoever uses it reports the bad reference
        if not isinstance(parsed, SpecPathRef):
            return ref
        path = self._not_guest_output(self.confine(parsed.path, what="environment", base=base))
        if path.is_file():
            from pyro.spec.environment import EnvironmentSpec
            from pyro.spec.load import load_spec

            loaded = load_spec(path)
            kernel = loaded.spec.spec.kernel if isinstance(loaded.spec, EnvironmentSpec) else None
            if kernel is not None:  # an image-based spec reads no host file
                self.fragment(kernel.fragment, path.parent, ref)
        return str(path)

    def fragment(self, fragment: str, spec_dir: Path, spec_name: str) -> Path:
        """The kernel fragment an Environment spec in ``spec_dir`` names, confined (and not
        in an artifacts folder).

        Raises:
            OutsideRootError: it is outside the root, or inside a ``.pyro-artifacts`` folder.
        """
        path = self.confine(fragment, what=f"kernel.fragment of {spec_name}", base=spec_dir)
        return self._not_guest_output(path)

    def _not_guest_output(self, path: Path) -> Path:
        """``path``, unless it is inside an artifacts folder: what a guest wrote there must
        not become an Environment (or kernel configuration) that the host builds.

        Raises:
            OutsideRootError: it is inside a ``.pyro-artifacts`` folder.
        """
        if ARTIFACTS_FOLDER in path.parts:
            raise OutsideRootError(
                f"{path} is inside {ARTIFACTS_FOLDER}/, which holds guest output: "
                "pyro does not build environments from it",
                "copy the files you checked out of it first (the host user's decision)",
            )
        return path

    def output_folder(self, run_name: str) -> Path:
        """Make a new, empty folder for one run's artifacts (or one task export) and return it:
        ``<base>/.pyro-artifacts/<run>-<YYYYmmdd-HHMMSS>-<random>/`` (mode 0700).

        Never an existing folder; ``.pyro-artifacts`` is never followed through a symlink
        (it is made with a ``.gitignore`` that ignores everything in it).

        Raises:
            OutsideRootError: the root has no folder.
            UsageError: the folder cannot be made.
        """
        base = self.base
        if base is None:
            raise OutsideRootError(
                "artifacts are refused: no host folder is open to this caller", self.hint()
            )
        parent = base / ARTIFACTS_FOLDER
        made_parent = _make_dir(parent)
        try:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise UsageError(
                f"cannot use {parent} for artifacts: {exc.strerror or exc} (a symlink?)",
                f"remove or rename {parent}; pyro makes it as a plain folder",
            ) from exc
        try:
            if made_parent:
                _write_new(fd, ".gitignore", b"# made by pyro: run artifacts, not sources\n*\n")
            name = re.sub(r"[^a-z0-9._-]", "-", run_name.lower())[:63].strip(".") or "run"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for _ in range(32):
                folder = f"{name}-{stamp}-{secrets.token_hex(3)}"
                try:
                    os.mkdir(folder, 0o700, dir_fd=fd)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise UsageError(
                        f"cannot make an artifacts folder in {parent}: {exc.strerror or exc}",
                        "check that the folder is writable",
                    ) from exc
                return parent / folder
        finally:
            os.close(fd)
        raise UsageError(f"cannot find a free artifacts folder name in {parent}")


def _make_dir(path: Path) -> bool:
    """Make ``path`` (mode 0700); False when something of that name is already there."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    except OSError as exc:
        raise UsageError(
            f"cannot make {path} for artifacts: {exc.strerror or exc}",
            "check that the folder is writable",
        ) from exc
    return True


def _write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Write a new file ``name`` in ``dir_fd``; nothing when it already exists."""
    try:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
        )
    except OSError:
        return  # already there (or not writable): only a convenience for git users
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
