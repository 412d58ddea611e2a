"""Renaming and relabelling a task (``task update``), and the rules names and labels follow.

``task create`` checks a name and labels with the same rules, so a task never holds what
``update`` would refuse. Names are not unique (two tasks may share one, as at create);
``task list --name``/``--label`` find them. Each update is a journal entry
(``kind: update``) in the task's sequence, so the journal tells when a task was renamed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from pyro.errors import UsageError
from pyro.tasks.journal import Journal, JournalEntry
from pyro.tasks.manager import TaskInfo, TaskManager

NAME_MAX = 128
LABEL_KEY_MAX = 128
LABEL_VALUE_MAX = 256


def _printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def check_name(name: str) -> str:
    """``name`` when it is a task name: 1 to 128 printable characters.

    Raises:
        UsageError: it is not.
    """
    if not name or len(name) > NAME_MAX or not _printable(name) or name != name.strip():
        raise UsageError(
            f"task name {name[:NAME_MAX]!r} is not a name",
            f"give 1 to {NAME_MAX} printable characters without leading or trailing spaces",
        )
    return name


def check_label_key(key: str) -> str:
    """``key`` when it is a label key: 1 to 128 printable characters, no ``=`` or space.

    Raises:
        UsageError: it is not.
    """
    if not key or len(key) > LABEL_KEY_MAX or not _printable(key) or "=" in key or " " in key:
        raise UsageError(
            f"label key {key[:LABEL_KEY_MAX]!r} is not a key",
            f"give 1 to {LABEL_KEY_MAX} printable characters without '=' or spaces",
        )
    return key


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` when every key is a key and every value 0 to 256 printable characters.

    Raises:
        UsageError: one is not.
    """
    for key, value in labels.items():
        check_label_key(key)
        if len(value) > LABEL_VALUE_MAX or not _printable(value):
            raise UsageError(
                f"the value of label {key!r} is not a label value",
                f"give at most {LABEL_VALUE_MAX} printable characters",
            )
    return dict(labels)


def update(
    manager: TaskManager,
    task_id: str,
    *,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    unlabel: Sequence[str] = (),
) -> TaskInfo:
    """Rename the task and set (``labels``) or remove (``unlabel``) labels, then journal it.

    Removing a label the task does not have is no error (the result is the same).

    Raises:
        NotFoundError: no such task.
        UsageError: nothing to change, a bad name or label, or one key both set and removed.
    """
    if name is None and not labels and not unlabel:
        raise UsageError(
            "task update got nothing to change",
            "give a new name, labels to set (K=V) or labels to remove",
        )
    if name is not None:
        check_name(name)
    wanted = check_labels(labels or {})
    for key in unlabel:
        check_label_key(key)
    both = sorted(set(wanted) & set(unlabel))
    if both:
        raise UsageError(
            f"label {both[0]!r} is both set and removed",
            "give each label key once: to set it (K=V) or to remove it",
        )
    manager.get(task_id)  # a task's id, not a VM's
    with manager.registry.locked(task_id):
        record = manager.registry.get(task_id)
        new_labels = {k: v for k, v in record.labels.items() if k not in unlabel} | wanted
        changes = _changes(record.name, name, record.labels, new_labels)
        record.name = record.name if name is None else name
        record.labels = new_labels
        manager.registry.save(record)
    with manager.locked(task_id):  # the journal's lock (never held with the VM's)
        _, meta = manager.get(task_id)
        now = time.time()
        seq = meta.command_count + 1
        Journal(manager.dir(task_id)).append(
            JournalEntry(
                seq=seq,
                kind="update",
                argv=_argv(name, wanted, unlabel),
                cwd="",
                exit_code=0,
                started_at=now,
                finished_at=now,
                duration_ms=0,
                stdout="".join(f"{line}\n" for line in changes),
            )
        )
        manager.save_meta(
            task_id, meta.model_copy(update={"command_count": seq, "last_activity_at": now})
        )
    return manager.status(task_id)


def _argv(name: str | None, labels: Mapping[str, str], unlabel: Sequence[str]) -> list[str]:
    """The update as ``pyro task update`` options (what the journal shows)."""
    argv = ["update"]
    if name is not None:
        argv += ["--name", name]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for key in unlabel:
        argv += ["--unlabel", key]
    return argv


def _changes(
    old_name: str | None,
    new_name: str | None,
    old: Mapping[str, str],
    new: Mapping[str, str],
) -> list[str]:
    """What changed, one line each (``name: a -> b``, ``label k: x -> (none)``)."""
    lines = []
    if new_name is not None and new_name != old_name:
        lines.append(f"name: {old_name or '(none)'} -> {new_name}")
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            lines.append(
                f"label {key}: {'(none)' if before is None else before} -> "
                f"{'(none)' if after is None else after}"
            )
    return lines or ["no change"]
