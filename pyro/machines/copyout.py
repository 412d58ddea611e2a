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
* **Modes:** setuid, setgid and sticky bits are never set; the host umask applies. With
  ``guest_modes`` a file keeps the guest's rwx bits (so scripts stay executable), plus
  owner read/write; without, files are ``0666 & ~umask``. Folders are ``0777 & ~umask``.
* **Caps** (:class:`CopyLimits`): every copy writes at most ``max_bytes`` bytes and
  ``max_entries`` entries (files, folders, links, and skipped entries) on the host, counted
  on what the host writes: a sparse file counts its full size, each hard link counts again.
  The sizes the listing claims are checked before anything is written; the bytes that
  actually arrive are counted as they are written, so a guest that lies about a size, or
  swaps a file for ``/dev/urandom``, is stopped at the cap.
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
from typing import TYPE_CHECKING, BinaryIO, cast

from pyro.errors import GuestPathError, LimitError, PyroError, UsageError

if TYPE_CHECKING:
    from pyro.guest.client import AgentClient
    from pyro.guest.results import GuestStat

DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_ENTRIES = 100_000
BYTES_ENV = "PYRO_COPY_OUT_MAX_BYTES"
ENTRIES_ENV = "PYRO_COPY_OUT_MAX_ENTRIES"
#: The longest file name Linux file systems hold, in bytes.
NAME_MAX = 255
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

    @classmethod
    def from_env(
        cls, *, max_bytes: int | None = None, max_entries: int | None = None
    ) -> CopyLimits:
        """The given values, else ``$PYRO_COPY_OUT_MAX_BYTES``/``_ENTRIES``, else defaults.

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
        )


def _env_number(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    match = _SIZE.match(raw)
    if match is None:
        raise UsageError(
            f"${name}={raw!r} is not a number",
            f"set {name} to a whole number (bytes may end in K, M, G or T), or unset it",
        )
    return int(match[1]) << _UNITS[(match[2] or "").lower()]


@dataclass(frozen=True)
class CopyRules:
    """What one copy is and how it treats modes and links; shared by its errors."""

    what: str
    """Starts every error message, e.g. ``export of /workspace`` or ``artifact /out``."""
    host_error: type[PyroError]
    """Raised when the host refuses a write (``UsageError`` for exports, as before)."""
    hint: str
    """The hint of host-side write errors."""
    limits: CopyLimits = field(default_factory=CopyLimits)
    guest_modes: bool = False
    """Keep the guest's rwx bits (minus the umask); otherwise files are 0666 & ~umask."""
    symlinks: bool = False
    """Recreate guest symlinks whose target stays inside the copied tree."""
    inside: Path | None = None
    """The destination folder must lie inside this host folder (symlinks resolved)."""


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


def copy_tree(client: AgentClient, source: str, dest: Path, rules: CopyRules) -> CopyReport:
    """Copy the guest folder ``source`` to the host folder ``dest`` (created, or merged into).

    ``dest`` itself is the caller's (user- or spec-chosen) path and is opened following
    symlinks; everything below it comes from the guest and is written as the module says.

    Raises:
        GuestPathError: a bad guest name; ``dest`` leaves ``rules.inside``.
        LimitError: the copy would pass a cap.
        PyroError: ``rules.host_error`` when the host refuses a write; a guest error.
    """
    folders = _scan(client, source, rules)
    report = CopyReport()
    with _open_dest(dest, rules) as root_fd:
        report.directories += 1
        try:
            _write_folders(client, folders, root_fd, dest, rules, report)
        except PyroError as exc:
            _add_leftovers(exc, report, dest)
            raise
    return report


def copy_file(
    client: AgentClient, source: str, info: GuestStat, folder: Path, name: str, rules: CopyRules
) -> CopyReport:
    """Copy the guest file ``source`` (``info`` is its stat) to ``folder/name`` on the host.

    ``folder`` is the caller's path (created if missing, opened following symlinks); ``name``
    is replaced by rename whatever it is, except a folder.

    Raises:
        LimitError: the file's size passes the byte cap (before or while writing).
        PyroError: ``rules.host_error`` when the host refuses a write; a guest error.
    """
    if name in ("", ".", "..") or "/" in name:
        raise UsageError(f"{folder / name} is not a file path", "give a path that ends in a name")
    if rules.limits.max_entries < 1:
        raise _over_entries(rules)
    if max(info.size, 0) > rules.limits.max_bytes:
        raise _over_bytes(rules, source)
    report = CopyReport()
    with _open_dest(folder, rules) as fd:
        _write_file(client, source, info.mode, fd, name, str(folder / name), rules, report)
    return report


# -- listing first ---------------------------------------------------------------------------


@dataclass
class _Folder:
    rel: tuple[str, ...]  # names below the copied tree's top; () is the top
    guest: str
    entries: list[GuestStat]


def _scan(client: AgentClient, source: str, rules: CopyRules) -> list[_Folder]:
    """Every folder under ``source`` with its checked entries, parents before children."""
    limits = rules.limits
    entries = 1  # the top folder itself
    claimed = 0
    if entries > limits.max_entries:
        raise _over_entries(rules)
    folders: list[_Folder] = []
    pending: list[tuple[tuple[str, ...], str]] = [((), source)]
    while pending:
        rel, guest = pending.pop()
        listing = client.list_dir(guest)
        seen: set[str] = set()
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
            if entry.kind == "f":
                claimed += max(entry.size, 0)
                if claimed > limits.max_bytes:
                    raise _over_bytes(rules, posixpath.join(guest, entry.name))
            elif entry.kind == "d":
                subfolders.append(entry.name)
        folders.append(_Folder(rel, guest, listing))
        for name in reversed(subfolders):
            pending.append(((*rel, name), posixpath.join(guest, name)))
    return folders


# -- then writing ----------------------------------------------------------------------------


def _write_folders(
    client: AgentClient,
    folders: list[_Folder],
    root_fd: int,
    dest: Path,
    rules: CopyRules,
    report: CopyReport,
) -> None:
    # The open folders from the top to the current one; folders come parents first.
    open_fds: list[tuple[tuple[str, ...], int]] = [((), root_fd)]
    try:
        for folder in folders:
            if folder.rel:
                while open_fds[-1][0] != folder.rel[:-1]:
                    os.close(open_fds.pop()[1])
                shown = str(dest.joinpath(*folder.rel))
                fd = _enter_folder(open_fds[-1][1], folder.rel[-1], shown, rules)
                open_fds.append((folder.rel, fd))
                report.directories += 1
            fd = open_fds[-1][1]
            for entry in folder.entries:
                guest = posixpath.join(folder.guest, entry.name)
                shown = str(dest.joinpath(*folder.rel, entry.name))
                if entry.kind == "d":
                    continue  # entered in its own turn
                if entry.kind == "f":
                    _write_file(client, guest, entry.mode, fd, entry.name, shown, rules, report)
                elif (
                    entry.kind == "l"
                    and rules.symlinks
                    and entry.link_target is not None
                    and link_stays_inside(entry.link_target, len(folder.rel))
                ):
                    _write_link(entry.link_target, fd, entry.name, shown, rules)
                    report.symlinks += 1
                else:
                    report.skipped.append(guest)
    finally:
        for _rel, fd in open_fds[1:]:
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
    client: AgentClient,
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
        budget = rules.limits.max_bytes - report.bytes
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


def _over_bytes(rules: CopyRules, at: str) -> LimitError:
    return LimitError(
        f"{rules.what} would write more than {_size(rules.limits.max_bytes)} on the host "
        f"(the copy-out byte limit; reached at {at!r})",
        f"copy out an archive or a smaller folder, or raise {BYTES_ENV} (bytes; sparse "
        "files count their full size and each hard link counts again)",
    )


def _over_entries(rules: CopyRules) -> LimitError:
    return LimitError(
        f"{rules.what} has more than {rules.limits.max_entries} entries (files, folders, "
        "links and special files; the copy-out entry limit)",
        f"copy out an archive instead (e.g. tar the folder in a step), or raise {ENTRIES_ENV}",
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
