"""Task secrets: stored once on the host (mode 0600), injected only when asked, redacted always.

A secret is a ``NAME`` and a value. Its value reaches the guest only as an environment
variable of an exec that names it (``--secret-env NAME``), and everything the host writes or
prints about a task (journal, status, command output returned to the caller, error messages)
passes through :class:`Redactor`, which replaces each value by ``[REDACTED:NAME]``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pyro.errors import StateError, UsageError

SECRETS_FILE = "secrets.json"
#: Shorter values would turn redaction into noise (every "1" in the output replaced).
MIN_SECRET_LEN = 4
MAX_SECRET_LEN = 64 * 1024
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_secret(name: str, value: str) -> None:
    """Refuse a secret whose name is not an env var name or whose value is unusable.

    Raises:
        UsageError: with what is wrong and how to fix it.
    """
    if not _NAME.match(name):
        raise UsageError(
            f"secret name {name!r} is not a valid environment variable name",
            "use letters, digits and _ (not starting with a digit), e.g. --secret API_TOKEN=...",
        )
    if len(value) < MIN_SECRET_LEN:
        raise UsageError(
            f"secret {name} is shorter than {MIN_SECRET_LEN} characters",
            "redacting such a short value would mangle every output; pass it with --env instead",
        )
    if len(value) > MAX_SECRET_LEN or "\0" in value:
        raise UsageError(
            f"secret {name} is longer than {MAX_SECRET_LEN} bytes or contains a NUL byte",
            "secrets are environment variable values; put large data in a file instead",
        )


def parse_secret_items(items: Iterable[str], files: Iterable[str] = ()) -> dict[str, str]:
    """``NAME=VALUE`` items and ``NAME=PATH`` files (value = file content, one trailing
    newline dropped) as a mapping.

    Raises:
        UsageError: an item is malformed, a name repeats, or a file cannot be read.
    """
    secrets: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--secret {name!r}... is not NAME=VALUE", "write --secret NAME=VALUE")
        pairs.append((name, value))
    for item in files:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UsageError(
                f"--secret-file {item!r} is not NAME=PATH", "write --secret-file NAME=PATH"
            )
        try:
            value = Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read secret file {path} for {name}: {exc}",
                "give a readable UTF-8 text file",
            ) from exc
        pairs.append((name, value[:-1] if value.endswith("\n") else value))
    for name, value in pairs:
        if name in secrets:
            raise UsageError(f"secret {name} is given twice", "give each secret once")
        check_secret(name, value)
        secrets[name] = value
    return secrets


class Redactor:
    """Replaces every secret value in text by ``[REDACTED:NAME]``."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._items = sorted(secrets.items(), key=lambda kv: -len(kv[1]))
        self._pattern = (
            re.compile("|".join(re.escape(v) for _, v in self._items)) if self._items else None
        )
        self._names = {value: name for name, value in self._items}

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: f"[REDACTED:{self._names[m.group(0)]}]", text)

    def all(self, items: Iterable[str]) -> list[str]:
        return [self(item) for item in items]

    def stream(self, sink: Callable[[bytes], None]) -> StreamRedactor:
        """A redacting filter in front of ``sink`` for output that arrives in chunks."""
        return StreamRedactor(self._items, sink)


class StreamRedactor:
    """Redacts a byte stream chunk by chunk.

    A value may be split across chunks, so the tail that could still become a value (its
    length minus one byte) is held back until the next chunk or :meth:`close`.
    """

    def __init__(self, items: list[tuple[str, str]], sink: Callable[[bytes], None]) -> None:
        self._sink = sink
        values = [(name, value.encode("utf-8")) for name, value in items]
        self._names = {value: name for name, value in values}
        self._pattern = re.compile(b"|".join(re.escape(v) for _, v in values)) if values else None
        self._hold = max((len(v) for _, v in values), default=1) - 1
        self._buf = b""

    def feed(self, chunk: bytes) -> None:
        if self._pattern is None:
            self._sink(chunk)
            return
        self._buf += chunk
        cut = len(self._buf) - self._hold
        for match in self._pattern.finditer(self._buf):
            if match.start() < cut < match.end():
                # A shorter value matched where a longer one may still complete: wait.
                cut = match.start()
        if cut > 0:
            self._emit(self._buf[:cut])
            self._buf = self._buf[cut:]

    def close(self) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = b""

    def _emit(self, data: bytes) -> None:
        assert self._pattern is not None
        self._sink(
            self._pattern.sub(lambda m: f"[REDACTED:{self._names[m.group(0)]}]".encode(), data)
        )


class SecretStore:
    """The secrets of one task, in ``<task dir>/secrets.json`` (mode 0600)."""

    def __init__(self, task_dir: Path) -> None:
        self.path = task_dir / SECRETS_FILE

    def save(self, secrets: Mapping[str, str]) -> None:
        """Write the secrets (atomically, never readable by others).

        Raises:
            StateError: the file cannot be written.
        """
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(dict(secrets), f)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StateError(f"cannot store the task's secrets in {self.path}: {exc}") from exc

    def load(self) -> dict[str, str]:
        """The stored secrets ({} when there are none).

        Raises:
            StateError: the file exists but is unreadable.
        """
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(
                f"the task's secrets file {self.path} is unreadable: {exc}",
                "delete the task and create it again with its secrets",
            ) from exc
        if not isinstance(data, dict):
            raise StateError(f"the task's secrets file {self.path} is malformed")
        return {str(k): str(v) for k, v in data.items()}

    def env_for(self, names: Iterable[str]) -> dict[str, str]:
        """The env vars for the secrets ``names`` asks for.

        Raises:
            UsageError: a name is not a secret of this task.
        """
        stored = self.load()
        env: dict[str, str] = {}
        for name in names:
            if name not in stored:
                known = ", ".join(sorted(stored)) or "none"
                raise UsageError(
                    f"the task has no secret named {name!r}",
                    f"its secrets: {known}; secrets are given at 'pyro task create --secret'",
                )
            env[name] = stored[name]
        return env
