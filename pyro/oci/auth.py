"""Registry credentials: bound to one registry each, never sent in clear beyond this machine.

Where credentials come from, first match wins, for the registry ``host[:port]`` asked about:

1. ``PYRO_REGISTRY_USERNAME``/``PYRO_REGISTRY_PASSWORD``, for one registry only: the one
   ``PYRO_REGISTRY_HOST`` names, else the host of ``PYRO_ENV_REGISTRY``. Set without either,
   they go nowhere, and a registry that asks for credentials gets a clear error instead.
2. docker's ``config.json``: ``credHelpers[host]`` (else ``credsStore``) runs
   ``docker-credential-<name> get`` with a timeout and a bounded output; when the helper
   has nothing for the host, the ``auths`` entry for the host.
3. Anonymous.

Credentials are looked up only when a registry asks for them (an HTTP 401), and never sent
over plain http to a host that is not loopback (:func:`may_send_credentials`). Nothing here
ever prompts or writes credentials.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pyro.errors import RegistryError

USERNAME_ENV = "PYRO_REGISTRY_USERNAME"
PASSWORD_ENV = "PYRO_REGISTRY_PASSWORD"
HOST_ENV = "PYRO_REGISTRY_HOST"
ENV_REGISTRY_ENV = "PYRO_ENV_REGISTRY"
HELPER_TIMEOUT = 10.0
"""Seconds a docker credential helper may take, start to exit."""
HELPER_OUTPUT_MAX = 64 << 10
"""Bytes a docker credential helper may write on stdout (and on stderr)."""
_HELPER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NOT_FOUND = b"credentials not found"


@dataclass(frozen=True)
class Credentials:
    """A username and password for HTTP basic auth (or a registry's token endpoint)."""

    username: str
    password: str
    origin: str

    def __repr__(self) -> str:  # never show the password in logs or tracebacks
        return f"Credentials(username={self.username!r}, origin={self.origin!r})"


# -- where credentials may go -------------------------------------------------------------


def normalize_registry(value: str) -> str:
    """``host[:port]`` of a registry given as a host, URL or ``HOST[:PORT]/PATH``, lowercased."""
    text = value.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def registry_host(registry: str) -> str:
    """The host of ``host[:port]`` (``[::1]:5000`` → ``::1``)."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """Whether ``host[:port]`` is this machine: ``localhost`` or a loopback IP address.

    A name that merely starts with ``127.`` (``127.evil.example``) is not: DNS decides
    where it goes.
    """
    host = registry_host(registry.lower())
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def may_send_credentials(registry: str, *, plain_http: bool) -> bool:
    """Whether credentials may go to ``registry`` over the transport chosen for it.

    Over https, yes; over plain http only when the registry is loopback (nobody else can
    listen in). ``--insecure`` allows plain http to other hosts, never credentials there.
    """
    return not plain_http or is_loopback(normalize_registry(registry))


def may_send_credentials_to_url(url: str) -> bool:
    """The same rule for a URL a registry names (its token endpoint)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.netloc)
    return parts.scheme == "http" and is_loopback(parts.netloc.rpartition("@")[2])


def environment_host() -> str | None:
    """The registry ``PYRO_REGISTRY_USERNAME``/``PASSWORD`` are bound to, or None."""
    for variable in (HOST_ENV, ENV_REGISTRY_ENV):
        value = normalize_registry(os.environ.get(variable, ""))
        if value:
            return value
    return None


# -- lookup -------------------------------------------------------------------------------


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def credentials_for(registry: str) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]), or None for anonymous access.

    Raises:
        RegistryError: only one of the two variables is set, the variables are set but
            bound to no registry, the docker config is unreadable or holds a malformed
            entry for this registry, or its credential helper is missing or fails.
    """
    registry = normalize_registry(registry)
    creds = _from_environment(registry)
    if creds is not None:
        return creds
    return _from_docker_config(registry, docker_config_path())


def _from_environment(registry: str) -> Credentials | None:
    user = os.environ.get(USERNAME_ENV)
    password = os.environ.get(PASSWORD_ENV)
    if not (user or password):
        return None
    if not (user and password):
        raise RegistryError(
            f"only one of {USERNAME_ENV} and {PASSWORD_ENV} is set",
            "set both, or neither for anonymous access",
        )
    bound = environment_host()
    if bound is None:
        raise RegistryError(
            f"registry {registry} asks for credentials, and {USERNAME_ENV}/{PASSWORD_ENV} "
            "are set but bound to no registry, so they are not sent",
            f"set {HOST_ENV}=HOST[:PORT] to the registry they belong to "
            f"(or {ENV_REGISTRY_ENV}), or 'docker login {registry}'",
        )
    return Credentials(user, password, "environment") if bound == registry else None


def _from_docker_config(registry: str, path: Path) -> Credentials | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise RegistryError(
            f"cannot read docker credentials from {path}: {exc}",
            f"fix or remove that file, or set {USERNAME_ENV}/{PASSWORD_ENV} and {HOST_ENV}",
        ) from exc
    if not isinstance(data, dict):
        return None
    helpers = data.get("credHelpers")
    helper = _lookup(helpers, registry) if isinstance(helpers, dict) else None
    where = "credHelpers"
    if not helper and isinstance(data.get("credsStore"), str) and data["credsStore"]:
        helper, where = data["credsStore"], "credsStore"
    if helper:
        creds = _from_helper(str(helper), registry, path, where)
        if creds is not None:
            return creds
    auths = data.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = _lookup(auths, registry)
    if isinstance(entry, dict) and entry.get("auth"):
        return _decode(str(entry["auth"]), registry, path)
    return None


def _lookup(table: dict[str, object], registry: str) -> object:
    """The entry for ``registry`` in a docker config table, keyed by host or URL."""
    for key in (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v2/"):
        if key in table:
            return table[key]
    for key, value in table.items():  # keys written in another case
        if isinstance(key, str) and normalize_registry(key) == registry:
            return value
    return None


def _decode(value: str, registry: str, path: Path) -> Credentials:
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RegistryError(
            f"the docker credentials for {registry} in {path} are not valid base64",
            f"run 'docker login {registry}' again",
        ) from exc
    if not sep or not user:
        raise RegistryError(
            f"the docker credentials for {registry} in {path} are not USER:PASSWORD",
            f"run 'docker login {registry}' again",
        )
    return Credentials(user, password, str(path))


# -- docker credential helpers ------------------------------------------------------------


def _from_helper(name: str, registry: str, path: Path, where: str) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for ``registry``; None when it has nothing."""
    program = f"docker-credential-{name}"
    fix = f"install {program}, or remove the {where} entry from {path}"
    if not _HELPER_NAME_RE.fullmatch(name):
        raise RegistryError(f"{where} in {path} names an invalid credential helper {name!r}", fix)
    executable = shutil.which(program)
    if executable is None:
        raise RegistryError(
            f"registry {registry} asks for credentials and {path} ({where}) says to ask "
            f"{program}, which is not on PATH",
            fix,
        )
    code, out, err = run_helper([executable, "get"], registry.encode(), program)
    if code != 0:
        if _NOT_FOUND in out.lower() or _NOT_FOUND in err.lower():
            return None
        said = (err or out).decode(errors="replace").strip().splitlines()
        detail = repr(said[0][:200]) if said else "no message"
        raise RegistryError(
            f"{program} failed for {registry} (exit {code}): {detail}",
            f"run 'docker login {registry}' again, or {fix}",
        )
    try:
        answer = json.loads(out)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{program} answered for {registry} with something not JSON") from exc
    user = answer.get("Username") if isinstance(answer, dict) else None
    secret = answer.get("Secret") if isinstance(answer, dict) else None
    if not (isinstance(user, str) and isinstance(secret, str) and user and secret):
        raise RegistryError(
            f"{program} answered for {registry} without a Username and Secret",
            f"run 'docker login {registry}' again",
        )
    if user == "<token>":
        raise RegistryError(
            f"{program} holds an identity token for {registry}; pyro needs a username and password",
            f"set {USERNAME_ENV}/{PASSWORD_ENV} and {HOST_ENV}={registry}",
        )
    return Credentials(user, secret, program)


def run_helper(argv: list[str], stdin: bytes, program: str) -> tuple[int, bytes, bytes]:
    """Run a credential helper: (exit code, stdout, stderr), each output at most
    :data:`HELPER_OUTPUT_MAX` bytes, all of it within :data:`HELPER_TIMEOUT` seconds.

    Raises:
        RegistryError: it cannot start, writes too much, or takes too long (it is killed).
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise RegistryError(f"cannot run {program}: {exc.strerror or exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + HELPER_TIMEOUT
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    outputs = {out_fd: bytearray(), err_fd: bytearray()}
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin)  # a host name: far below a pipe's buffer
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        with selectors.DefaultSelector() as selector:
            for fd in outputs:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RegistryError(
                        f"{program} did not answer within {HELPER_TIMEOUT:g} s; it was stopped",
                        f"check that {program} works: echo HOST | {program} get",
                    )
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    outputs[key.fd] += chunk
                    if len(outputs[key.fd]) > HELPER_OUTPUT_MAX:
                        raise RegistryError(
                            f"{program} wrote more than {HELPER_OUTPUT_MAX} bytes; it was stopped",
                            f"check that {program} works: echo HOST | {program} get",
                        )
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired as exc:
            raise RegistryError(
                f"{program} did not exit within {HELPER_TIMEOUT:g} s; it was stopped"
            ) from exc
    finally:
        if proc.poll() is None:
            # Its own session (start_new_session): the group is the helper and its children.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return code, bytes(outputs[out_fd]), bytes(outputs[err_fd])
