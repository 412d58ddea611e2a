"""A real OCI registry for tests: Debian's ``docker-registry`` on 127.0.0.1.

Fixtures:

* ``registry`` (session): one registry shared by every test that only pushes and pulls.
* ``fresh_registry`` (function): a registry of its own, for tests that kill it or tamper
  with its storage.

Both listen on a free loopback port with a temporary storage root, wait until ``/v2/``
answers, and are killed (and waited for) at teardown. The access log is parsed so tests can
count requests (e.g. "an installed pull sends no blob request").
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARY = "docker-registry"
_ACCESS_RE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3})')

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
{auth}"""

AUTH = """\
auth:
  htpasswd:
    realm: pyro-test
    path: {path}
"""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


@dataclass
class Registry:
    """A running ``docker-registry serve`` process and where it keeps things."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _marks: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"oci://{self.address}/{repository}:{tag}"

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps the bytes of blob ``digest`` on disk."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def start(self) -> None:
        """Start (again) and wait for ``/v2/``; a fresh free port if the old one is taken."""
        self.storage.mkdir(parents=True, exist_ok=True)
        last = ""
        for attempt in range(5):
            # A restart keeps its port so references made before stay valid.
            if not (attempt == 0 and self.port):
                self.port = _free_port()
            config = self.workdir / "config.yml"
            auth = AUTH.format(path=self._htpasswd()) if self.users else ""
            config.write_text(CONFIG.format(root=self.storage, port=self.port, auth=auth))
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
            try:
                self.process = subprocess.Popen(
                    [BINARY, "serve", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            finally:
                log.close()
            if self._wait_ready():
                return
            last = self.log_path.read_text(errors="replace")[-2000:]
            self.kill()
        raise RuntimeError(f"docker-registry did not come up; log tail:\n{last}")

    def _htpasswd(self) -> Path:
        # bcrypt is what docker-registry's htpasswd backend accepts; glibc's crypt makes it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

        path = self.workdir / "htpasswd"
        lines = [
            f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}"
            for user, password in self.users.items()
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as reply:
                    if reply.status == 200:
                        return True
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.users:
                    return True  # up, and asking for credentials as configured
                time.sleep(0.05)
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL the registry and reap it (idempotent)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def requests(self) -> list[Request]:
        """Every request the registry has logged so far, in order.

        A marker request is sent first and waited for, so everything before it is logged.
        """
        self._marks += 1
        marker = f"/v2/?pyro-test-mark={self._marks}"
        with contextlib.suppress(urllib.error.URLError, OSError):
            urllib.request.urlopen(f"http://{self.address}{marker}", timeout=5).close()
        deadline = time.monotonic() + 5
        found: list[Request] = []
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            found = [
                Request(m[1], m[2], int(m[3]))
                for m in _ACCESS_RE.finditer(text)
                if "pyro-test-mark" not in m[2]
            ]
            if marker in text:
                break
            time.sleep(0.05)
        return found

    def blob_requests(self) -> list[Request]:
        return [r for r in self.requests() if "/blobs/" in r.path]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(workdir: Path, users: dict[str, str] | None = None) -> Iterator[Registry]:
    """Start a registry under ``workdir`` (basic auth if ``users``); kill and reap it on exit."""
    if shutil.which(BINARY) is None:
        pytest.skip(f"{BINARY} is not installed (apt-get install docker-registry)")
    registry = Registry(workdir, users=dict(users or {}))
    try:
        registry.start()
        yield registry
    finally:
        registry.kill()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for the whole session (do not kill it or tamper with its storage)."""
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that wants HTTP basic auth: user ``pyro``, password ``s3cret``."""
    with running_registry(tmp_path_factory.mktemp("registry"), {"pyro": "s3cret"}) as reg:
        yield reg


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry of this test's own: kill it, restart it, tamper with its storage."""
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg
