"""Recognising git metadata in what a guest writes to the host.

A git folder's ``config`` (``core.fsmonitor``, ``core.pager``, ...) and ``hooks/`` run
commands on the host at the user's next git command. So what a guest sends is not written
to the host as git metadata unless the host's user asks for it (``pyro task export
--include-git``): :mod:`pyro.machines.copyout` skips an entry whose name :func:`is_git_name`
recognises and a folder laid out as a git folder (:func:`looks_like_git_dir`), and a run's
``artifacts[].target`` may not name a path through ``.git`` (:func:`has_git_part`).

The checks are deliberately wider than git on Linux: a host folder may be case-insensitive
(vfat, exFAT, ext4 casefold, macOS), or ignore some Unicode code points (HFS+), or drop
trailing dots and spaces and know 8.3 short names (NTFS); git's own ``verify_path`` refuses
the same spellings for the same reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Code points HFS+ ignores in names (the list git's utf8.c uses for is_hfs_dotgit).
_IGNORED = re.compile("[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]")


def _folded(name: str) -> str:
    return unicodedata.normalize("NFKC", _IGNORED.sub("", name)).casefold()


def is_git_name(name: str) -> bool:
    """Whether ``name`` is, or a host file system may take it for, ``.git``.

    ``.git``, ``.GIT``, ``.git.`` or ``.git `` (NTFS drops trailing dots and spaces),
    ``.git::$INDEX_ALLOCATION`` (an NTFS stream), ``git~1`` (its 8.3 short name), and
    ``.g\\u200cit`` (HFS+ ignores U+200C) all are.
    """
    text = _folded(name).split(":", 1)[0].rstrip(" .")
    return text in (".git", "git~1")


def has_git_part(path: str) -> bool:
    """Whether one of the ``/``-separated parts of ``path`` is a git name."""
    return any(is_git_name(part) for part in path.split("/") if part)


def looks_like_git_dir(names: Iterable[str]) -> bool:
    """Whether a folder holding entries named ``names`` is one git would use as a git
    folder (a bare repository, or the contents of a ``.git`` under another name): ``HEAD``
    with ``objects`` and ``refs``, or with ``commondir`` (git's ``is_git_directory``)."""
    folded = {_folded(name) for name in names}
    return "head" in folded and ({"objects", "refs"} <= folded or "commondir" in folded)
