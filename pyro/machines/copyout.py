"""Writing what a guest sends under a host folder: the one guest-to-host tree writer.

Every copy from a guest to the host tree (``pyro task export``, run ``artifacts``) goes
through :func:`copy_tree` or :func:`copy_file`, so one set of rules holds for all of them.
The guest is hostile: it picks names, kinds, modes, sizes and link targets, and may change
them between two requests.

* **Names are checked before anything is written.** The whole guest folder is listed first;
  a name that is not valid UTF-8, is empty, ``.`` or ``..``, holds ``/`` or NUL, is longer
  than a host file name may be (255 bytes), or is listed twice in one folder ends the copy
  with a :class:`GuestPathError` and the host untouched. Names arrive decoded without loss
  (:meth:`pyro.guest.protocol.Fields.name`), so two different guest names never become one
  host name.
* **Below the destination folder nothing is resolved through a symlink.** Every write is
  relative to a directory file descriptor: folders by ``mkdirat`` then
  ``openat(O_DIRECTORY|O_NOFOLLOW)``, files by ``openat(O_CREAT|O_EXCL|O_NOFOLLOW)`` of a
  temp name then ``renameat`` over the final name, symlinks by ``symlinkat`` to a temp name
  then ``renameat``. A symlink already in the output tree (left by an earlier copy, or
  planted) is never followed: it is **replaced** (the link itself; what it points to is not
  touched) by what the guest has at that name. Existing files are replaced by rename, never
  opened, so a hard link in the output tree does not carry the write to its other names.
  A folder where the guest has a file or link, or a file where it has a folder, is an error.
* **Symlinks** are recreated only when the caller allows it and the target provably stays
  inside the copied tree (:func:`link_stays_inside`); others are skipped and reported, as are
  FIFOs, sockets and devices.
* **Git metadata is not written** (:mod:`pyro.spec.gitmeta`) unless the caller allows it
  (``git``; only ``pyro task export --include-git`` and the SDK's ``include_git=True`` do):
  an entry named ``.git`` (any case, or a spelling a host file system takes for it) is
  skipped and reported, so is a folder laid out as a git folder (``HEAD``, ``objects/``,
  ``refs/``), and a destination inside a ``.git`` folder is refused. A guest-written hook or
  ``core.fsmonitor`` would otherwise run at the user's next git command.
* **Modes:** setuid, setgid and sticky bits are never set; the host umask applies. With
  ``guest_modes`` a file keeps the guest's rwx bits (so scripts stay executable), plus
  owner read/write; without, files are ``0666 & ~umask``. Folders are ``0777 & ~umask``.
* **Caps** (:class:`CopyLimits`, spent from a :class:`CopyBudget` that several copies may
  share, e.g. all the artifacts of one run): at most ``max_bytes`` bytes and
  ``max_entries`` entries (files, folders, links, and skipped entries) on the host, counted
  on what the host writes: a sparse file counts its full size, each hard link counts again.
  The sizes the listing claims are checked before anything is written; the bytes that
  actually arrive are counted as they are written, so a guest that lies about a size, or
  swaps a file for ``/dev/urandom``, is stopped at the cap. Folders nest at most
  ``max_depth`` levels and a guest path is at most 4095 bytes (Linux ``PATH_MAX``), both
  checked while listing: a lying agent cannot make the listing grow host memory faster
  than its entries, and the write phase holds at most ``max_depth + 1`` folders open.
* **On an error** the file being written is removed (it only ever exists under a
  ``.pyro-partial-*`` temp name); files, links and folders completed before the error stay,
  and the error says so. Errors found while listing (names, entry cap, claimed sizes) leave
  the host untouched. A ``kill -9`` mid-file can leave one ``.pyro-partial-*`` file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from pyro.errors import GuestPathError, LimitError, PyroError, UsageError
from pyro.spec.gitmeta import has_git_part, is_git_name, looks_like_git_dir

if TYPE_CHECKING:
    from pyro.guest.results import GuestStat


class GuestFiles(Protocol):
    """Where copied-out files come from: the guest agent (:class:`AgentClient`), or a
    stopped task's disk (:class:`pyro.tasks.disk.DiskReader`). Both are untrusted."""

    def stat(self, guest_path: str) -> GuestStat: ...

    def list_dir(self, guest_path: str) -> list[GuestStat]: ...

    def get_file(self, guest_path: str, dst: BinaryIO, *, max_bytes: int | None = None) -> int: ...


DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_DEPTH = 128
BYTES_ENV = "PYRO_COPY_OUT_MAX_BYTES"
ENTRIES_ENV = "PYRO_COPY_OUT_MAX_ENTRIES"
DEPTH_ENV = "PYRO_COPY_OUT_MAX_DEPTH"
#: The longest file name Linux file systems hold, in bytes.
NAME_MAX = 255
#: Linux ``PATH_MAX``: a guest path (with its final NUL) the guest kernel can open.
PATH_MAX = 4096
TEMP_PREFIX = ".pyro-partial-"
# O_PATH: a folder we may write into but not list (mode 0300) still opens.
_DIR_FLAGS = os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


@dataclass(frozen=True)
class CopyLimits:
    """How much one copy may write on the host."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_depth: int = DEFAULT_MAX_DEPTH
    """How many folder levels may nest below the copied folder."""

    @classmethod
    def from_env(
        cls,
        *,
        max_bytes: int | None = None,
        max_entries: int | None = None,
        max_depth: int | None = None,
    ) -> CopyLimits:
        """The given values, else ``$PYRO_COPY_OUT_MAX_BYTES``/``_ENTRIES``/``_DEPTH``, else
        defaults.

        Raises:
            UsageError: an environment variable is not a number.
        """
        return cls(
            max_bytes=_env_number(BYTES_ENV, DEFAULT_MAX_BYTES) if max_bytes is None else max_bytes,
            max_entries=(
                _env_number(ENTRIES_ENV, DEFAULT_MAX_ENTRIES)
                if max_entries is None
                else max_entries
            ),
            max_depth=(
                _env_number(DEPTH_ENV, DEFAULT_MAX_DEPTH, sizes=False)
                if max_depth is None
                else max_depth
            ),
        )


@dataclass
class CopyBudget:
    """What the copies sharing this budget have written on the host, against one set of
    limits. Every copy spends from one; all the artifacts of one run share one
    (:func:`pyro.execute.apply.apply`), so N artifacts naming one big guest file write at
    most one cap, not N."""

    limits: CopyLimits = field(default_factory=CopyLimits)
    shared_by: str = ""
    """Who shares it, for messages (e.g. ``all artifacts of this run``); empty: one copy."""
    bytes: int = 0
    entries: int = 0


def _env_number(name: str, default: int, *, sizes: bool = True) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    match = _SIZE.match(raw) if sizes else re.match(r"^\s*(\d+)\s*$", raw)
    if match is None:
        units = " (bytes may end in K, M, G or T)" if sizes else ""
        raise UsageError(
            f"${name}={raw!r} is not a number",
            f"set {name} to a whole number{units}, or unset it",
        )
    return int(match[1]) << (_UNITS[(match[2] or "").lower()] if sizes else 0)


@dataclass(frozen=True)
class CopyRules:
    """What one copy is and how it treats modes and links; shared by its errors."""

    what: str
    """Starts every error message, e.g. ``export of /workspace`` or ``artifact /out``."""
    host_error: type[PyroError]
    """Raised when the host refuses a write (``UsageError`` for exports, as before)."""
    hint: str
    """The hint of host-side write errors."""
    budget: CopyBudget = field(default_factory=CopyBudget)
    """What this copy may still write; shared with other copies when the caller says so."""
    guest_modes: bool = False
    """Keep the guest's rwx bits (minus the umask); otherwise files are 0666 & ~umask."""
    symlinks: bool = False
    """Recreate guest symlinks whose target stays inside the copied tree."""
    inside: Path | None = None
    """The destination folder must lie inside this host folder (symlinks resolved)."""
    git: bool = False
    """Write git metadata (``.git`` entries, folders laid out as git folders) too."""
    git_hint: str = "copy out an archive instead (e.g. tar the folder in a step)"
    """The hint when git metadata is refused."""

    @property
    def limits(self) -> CopyLimits:
        return self.budget.limits


@dataclass
class CopyReport:
    """What a copy wrote on the host; ``skipped`` holds guest paths that were not copied."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def check_name(name: str, folder: str) -> None:
    """Refuse a guest name that cannot be one host file name.

    Raises:
        GuestPathError: not valid UTF-8, empty, ``.``/``..``, with ``/`` or NUL, too long.
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
        raise GuestPathError(
            f"the guest listed a name that is not valid UTF-8 ({raw!r}) in {folder!r}",
            "rename it in the guest (or copy out an archive, e.g. tar the folder in a step); "
            "such names are refused so two guest names can never become one host name",
        ) from None
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise GuestPathError(
            f"the guest listed a bad file name {name!r} in {folder!r}",
            "the guest agent sent a name no file can have; the guest is broken or hostile",
        )
    if len(encoded) > NAME_MAX:
        raise GuestPathError(
            f"the guest listed a name of {len(encoded)} bytes in {folder!r}, longer than a "
            f"host file name may be ({NAME_MAX} bytes)",
            "rename it in the guest, or copy out an archive instead (e.g. tar the folder)",
        )


def link_stays_inside(target: str, depth: int) -> bool:
    """Whether a link with this target, ``depth`` folders below the copied tree's top,
    resolves inside the tree however the tree's other links point.

    Accepted: a relative target made of ``..`` parts first (no more than ``depth``), then
    names only. Walking up real folders from the link's own folder stays inside; walking
    down through names stays inside as long as every link met is itself accepted, which
    holds for every link this module creates. A ``..`` after a name is refused, since the
    name may be a link (``sub/link/..`` is not ``sub``).
    """
    if not target or target.startswith("/") or "\0" in target:
        return False
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        return False
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    return ups <= depth and ".." not in parts[ups:]


# -- the copies ----------------------------------------------------------------------------


def copy_tree(client: GuestFiles, source: str, dest: Path, rules: CopyRules) -> CopyReport:
    """Copy the guest folder ``source`` to the host folder ``dest`` (created, or merged into).

    ``dest`` itself is the caller's (user- or spec-chosen) path and is opened following
    symlinks; everything below it comes from the guest and is written as the module says.

    Raises:
        GuestPathError: a bad guest name or an over-long guest path; ``dest`` leaves
            ``rules.inside``; ``source`` is laid out as a git folder (unless ``rules.git``).
        LimitError: the copy would pass a cap (bytes, entries, depth).
        PyroError: ``rules.host_error`` when the host refuses a write, or ``dest`` is in a
            ``.git`` folder (unless ``rules.git``); a guest error.
    """
    _check_not_git(dest, rules)
    scan = _scan(client, source, rules)
    report = CopyReport(skipped=scan.skipped)
    with _open_dest(dest, rules) as root_fd:
        report.directories += 1
        try:
            _write_folders(client, scan, root_fd, dest, rules, report)
        except PyroError as exc:
            _add_leftovers(exc, report, dest)
            raise
    return report


def copy_file(
    client: GuestFiles, source: str, info: GuestStat, folder: Path, name: str, rules: CopyRules
) -> CopyReport:
    """Copy the guest file ``source`` (``info`` is its stat) to ``folder/name`` on the host.

    ``folder`` is the caller's path (created if missing, opened following symlinks); ``name``
    is replaced by rename whatever it is, except a folder.

    Raises:
        LimitError: the file's size passes the byte cap (before or while writing).
        PyroError: ``rules.host_error`` when the host refuses a write, or ``folder/name`` is
            (in) a ``.git`` folder (unless ``rules.git``); a guest error.
    """
    if name in ("", ".", "..") or "/" in name:
        raise UsageError(f"{folder / name} is not a file path", "give a path that ends in a name")
    _check_not_git(folder / name, rules)
    budget = rules.budget
    if budget.entries + 1 > rules.limits.max_entries:
        raise _over_entries(rules)
    if budget.bytes + max(info.size, 0) > rules.limits.max_bytes:
        raise _over_bytes(rules, source)
    budget.entries += 1
    report = CopyReport()
    with _open_dest(folder, rules) as fd:
        _write_file(client, source, info.mode, fd, name, str(folder / name), rules, report)
    return report


def _check_not_git(dest: Path, rules: CopyRules) -> None:
    if not rules.git and has_git_part(dest.as_posix()):
        raise rules.host_error(
            f"{rules.what}: {dest} is in a .git folder; pyro does not write guest files there "
            "(a guest-written hook or config runs commands at the next git command)",
            rules.git_hint,
        )


# -- listing first ---------------------------------------------------------------------------


@dataclass
class _Folder:
    """One listed folder. Only its own name is kept (with its parent's index), not its
    path: a chain of N folders costs N names, not N paths of up to N names."""

    name: str  # in its parent's listing; "" for the copied folder itself
    parent: int  # index of the parent in _Scan.folders; -1 for the copied folder
    depth: int  # folders between it and the copied folder's top; 0 for the top
    entries: list[GuestStat]  # git metadata already left out (see _Scan.skipped)


@dataclass
class _Scan:
    source: str
    folders: list[_Folder]
    """Parents before children, depth first (a folder's parent is open while it is)."""
    skipped: list[str]
    """Guest paths of git metadata that will not be written."""

    def rel(self, index: int) -> tuple[str, ...]:
        """The names from the copied folder down to folder ``index``."""
        names: list[str] = []
        while index > 0:
            folder = self.folders[index]
            names.append(folder.name)
            index = folder.parent
        return tuple(reversed(names))

    def guest(self, index: int) -> str:
        return posixpath.join(self.source, *self.rel(index))


def _scan(client: GuestFiles, source: str, rules: CopyRules) -> _Scan:
    """Every folder under ``source`` with its checked entries, parents before children.

    Everything the caps and names allow is checked here, before a byte is written.
    """
    budget, limits = rules.budget, rules.limits
    entries = budget.entries + 1  # the top folder itself
    claimed = budget.bytes
    if entries > limits.max_entries:
        raise _over_entries(rules)
    _check_path_length(source, rules)
    scan = _Scan(source=source, folders=[], skipped=[])
    # (parent index, name, depth) of folders still to list; the top is (-1, "", 0).
    pending: list[tuple[int, str, int]] = [(-1, "", 0)]
    while pending:
        parent, name, depth = pending.pop()
        index = len(scan.folders)
        scan.folders.append(_Folder(name, parent, depth, []))
        guest = scan.guest(index)
        listing = client.list_dir(guest)
        if not rules.git and looks_like_git_dir(entry.name for entry in listing):
            if parent < 0:
                raise GuestPathError(
                    f"{rules.what}: the guest folder {_short(guest)!r} is laid out as a git "
                    "folder (HEAD, objects/, refs/); its config and hooks would run commands "
                    "on the host",
                    rules.git_hint,
                )
            scan.folders.pop()  # listed, never entered: its name stays in the parent
            scan.skipped.append(guest)
            continue
        base = len(guest.encode("utf-8", "surrogateescape")) + (0 if guest.endswith("/") else 1)
        seen: set[str] = set()
        kept: list[GuestStat] = []
        subfolders: list[str] = []
        for entry in listing:
            check_name(entry.name, guest)
            if entry.name in seen:
                raise GuestPathError(
                    f"the guest listed {entry.name!r} twice in {guest!r}",
                    "the guest agent is broken or hostile; nothing was copied",
                )
            seen.add(entry.name)
            entries += 1
            if entries > limits.max_entries:
                raise _over_entries(rules)
            if base + len(entry.name.encode()) >= PATH_MAX:
                _check_path_length(posixpath.join(guest, entry.name), rules)
            if not rules.git and is_git_name(entry.name):
                scan.skipped.append(posixpath.join(guest, entry.name))
                continue
            kept.append(entry)
            if entry.kind == "f":
                claimed += max(entry.size, 0)
                if claimed > limits.max_bytes:
                    raise _over_bytes(rules, posixpath.join(guest, entry.name))
            elif entry.kind == "d":
                if depth + 1 > limits.max_depth:
                    raise _over_depth(rules, posixpath.join(guest, entry.name))
                subfolders.append(entry.name)
        scan.folders[index].entries = kept
        for sub in reversed(subfolders):
            pending.append((index, sub, depth + 1))
    budget.entries = entries
    return scan


def _check_path_length(path: str, rules: CopyRules) -> None:
    size = len(path.encode("utf-8", "surrogateescape"))
    if size >= PATH_MAX:
        raise GuestPathError(
            f"{rules.what}: the guest path {_short(path)!r} is {size} bytes long; a guest "
            f"path is at most {PATH_MAX - 1} bytes (PATH_MAX); nothing was copied",
            "the guest agent is broken or hostile, or the tree is too deep to copy file by "
            "file: copy out an archive instead (e.g. tar the folder in a step)",
        )


def _short(path: str) -> str:
    """A long guest path cut in the middle, for messages."""
    return path if len(path) <= 160 else f"{path[:60]}...{path[-90:]}"


# -- then writing ----------------------------------------------------------------------------


def _write_folders(
    client: GuestFiles,
    scan: _Scan,
    root_fd: int,
    dest: Path,
    rules: CopyRules,
    report: CopyReport,
) -> None:
    # The open folders from the top to the current one, as (index, fd); at most
    # max_depth + 1, since folders come depth first, parents before children.
    open_fds: list[tuple[int, int]] = [(0, root_fd)]
    try:
        for index, folder in enumerate(scan.folders):
            rel = scan.rel(index)
            if index:
                while open_fds[-1][0] != folder.parent:
                    os.close(open_fds.pop()[1])
                shown = str(dest.joinpath(*rel))
                fd = _enter_folder(open_fds[-1][1], folder.name, shown, rules)
                open_fds.append((index, fd))
                report.directories += 1
            fd = open_fds[-1][1]
            guest_folder = posixpath.join(scan.source, *rel)
            for entry in folder.entries:
                guest = posixpath.join(guest_folder, entry.name)
                shown = str(dest.joinpath(*rel, entry.name))
                if entry.kind == "d":
                    continue  # entered in its own turn (or skipped as git metadata)
                if entry.kind == "f":
                    _write_file(client, guest, entry.mode, fd, entry.name, shown, rules, report)
                elif (
                    entry.kind == "l"
                    and rules.symlinks
                    and entry.link_target is not None
                    and link_stays_inside(entry.link_target, folder.depth)
                ):
                    _write_link(entry.link_target, fd, entry.name, shown, rules)
                    report.symlinks += 1
                else:
                    report.skipped.append(guest)
    finally:
        for _index, fd in open_fds[1:]:
            os.close(fd)


@contextlib.contextmanager
def _host_write(shown: str, rules: CopyRules) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise rules.host_error(
            f"cannot write {shown} on the host: {exc.strerror or exc}", rules.hint
        ) from exc


@contextlib.contextmanager
def _open_dest(dest: Path, rules: CopyRules) -> Iterator[int]:
    with _host_write(str(dest), rules):
        dest.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, _DIR_FLAGS)
    try:
        if rules.inside is not None:
            _check_inside(fd, dest, rules)
        yield fd
    finally:
        os.close(fd)


def _check_inside(fd: int, dest: Path, rules: CopyRules) -> None:
    """The folder open as ``fd`` is inside ``rules.inside`` (the kernel's path of the fd,
    so a folder swapped for a link after the caller resolved it is caught)."""
    assert rules.inside is not None
    root = rules.inside.resolve()
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        real = dest.resolve()  # no /proc: the caller's resolution is what we have
    if real != root and root not in real.parents:
        raise rules.host_error(
            f"{dest} resolves to {real}, outside {root}",
            "keep host paths inside the spec's folder (symlinks that leave it are refused)",
        )


def _enter_folder(parent_fd: int, name: str, shown: str, rules: CopyRules) -> int:
    with _host_write(shown, rules):
        try:
            os.mkdir(name, 0o777, dir_fd=parent_fd)
        except FileExistsError:
            kind = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            if stat.S_ISLNK(kind):  # never followed: the link goes, a folder takes its place
                os.unlink(name, dir_fd=parent_fd)
                os.mkdir(name, 0o777, dir_fd=parent_fd)
            elif not stat.S_ISDIR(kind):
                raise rules.host_error(
                    f"cannot write {shown} on the host: a file is there and the guest has a folder",
                    "move the file away, or copy to a new folder",
                ) from None
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)


def _temp_name() -> str:
    return TEMP_PREFIX + secrets.token_hex(6)


def _write_file(
    client: GuestFiles,
    guest: str,
    mode: int,
    dir_fd: int,
    name: str,
    shown: str,
    rules: CopyRules,
    report: CopyReport,
) -> None:
    perm = (mode & 0o777) | 0o600 if rules.guest_modes else 0o666  # umask applies at creation
    with _host_write(shown, rules):
        while True:
            tmp = _temp_name()
            try:
                fd = os.open(tmp, _FILE_FLAGS, perm, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
    try:
        budget = rules.limits.max_bytes - rules.budget.bytes
        with _host_write(shown, rules), os.fdopen(fd, "wb") as out:
            sink = _Sink(out, budget, lambda: _over_bytes(rules, guest))
            try:
                client.get_file(guest, cast(BinaryIO, sink), max_bytes=budget)
            except LimitError as exc:
                raise _over_bytes(rules, guest) from exc
        with _host_write(shown, rules):
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    report.files += 1
    report.bytes += sink.written
    rules.budget.bytes += sink.written


def _write_link(target: str, dir_fd: int, name: str, shown: str, rules: CopyRules) -> None:
    with _host_write(shown, rules):
        while True:
            tmp = _temp_name()
            try:
                os.symlink(target, tmp, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


class _Sink:
    """Counts what is written to the host file and stops at the byte budget, whatever
    ``max_bytes`` the agent client honours."""

    def __init__(self, out: BinaryIO, budget: int, over: Callable[[], PyroError]) -> None:
        self.out = out
        self.budget = budget
        self.over = over
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.budget:
            raise self.over()
        self.out.write(data)
        self.written += len(data)
        return len(data)


# -- errors -----------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _shared(rules: CopyRules) -> str:
    shared_by = rules.budget.shared_by
    return f", for {shared_by} together" if shared_by else ""


def _over_bytes(rules: CopyRules, at: str) -> LimitError:
    return LimitError(
        f"{rules.what} would write more than {_size(rules.limits.max_bytes)} on the host "
        f"(the copy-out byte limit{_shared(rules)}; reached at {_short(at)!r})",
        f"copy out an archive or a smaller folder, or raise {BYTES_ENV} (bytes; sparse "
        "files count their full size and each hard link counts again)",
    )


def _over_entries(rules: CopyRules) -> LimitError:
    return LimitError(
        f"{rules.what} has more than {rules.limits.max_entries} entries (files, folders, "
        f"links and special files; the copy-out entry limit{_shared(rules)})",
        f"copy out an archive instead (e.g. tar the folder in a step), or raise {ENTRIES_ENV}",
    )


def _over_depth(rules: CopyRules, at: str) -> LimitError:
    return LimitError(
        f"{rules.what} nests folders more than {rules.limits.max_depth} levels deep (the "
        f"copy-out depth limit; reached at {_short(at)!r}); nothing was copied",
        f"copy out an archive instead (e.g. tar the folder in a step), or raise {DEPTH_ENV}",
    )


def _add_leftovers(exc: PyroError, report: CopyReport, dest: Path) -> None:
    """Say in ``exc``'s summary what stays on the host (same error type, same hint)."""
    done = report.files + report.symlinks
    note = (
        f"; {report.files} file(s) and {report.symlinks} symlink(s) written before it stay "
        f"under {dest}"
        if done
        else f"; no file was written under {dest}"
    )
    exc.summary += note + " (no partial file is left)"
    exc.args = (exc.summary, *exc.args[1:])
