"""Registry credentials go to one registry, never in clear beyond loopback (issue #17, item 4).

Two fake registries on 127.0.0.1, different ports, are two hosts: credentials bound to one
must never reach the other, whatever a spec names, a Location header points at or a
credential helper is asked. docker's config.json is read per host, credential helpers
included (a fake ``docker-credential-*`` script on PATH).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fake_registry import FakeRegistry, fake_registry, reply

from pyro.errors import RegistryError
from pyro.oci import auth
from pyro.oci.auth import credentials_for
from pyro.oci.client import RegistryClient
from pyro.oci.reference import parse_oci_ref, resolve

pytestmark = pytest.mark.hostile

MANIFEST = b'{"schemaVersion":2}'
MANIFEST_PATH = "/v2/pyro/x/manifests/1"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "PYRO_REGISTRY_USERNAME",
        "PYRO_REGISTRY_PASSWORD",
        "PYRO_REGISTRY_HOST",
        "PYRO_ENV_REGISTRY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


@pytest.fixture
def registries() -> Iterator[tuple[FakeRegistry, FakeRegistry]]:
    """Two registries that want ``alice:s3cret`` (each on its own port: its own host)."""
    with fake_registry() as first, fake_registry() as second:
        for registry in (first, second):
            registry.basic = ("alice", "s3cret")
            registry.routes["GET", MANIFEST_PATH] = reply(200, MANIFEST)
        yield first, second


def env_credentials(monkeypatch: pytest.MonkeyPatch, host: str | None) -> None:
    monkeypatch.setenv("PYRO_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("PYRO_REGISTRY_PASSWORD", "s3cret")
    if host is not None:
        monkeypatch.setenv("PYRO_REGISTRY_HOST", host)


# -- environment variables are bound to one host ------------------------------------------


def test_env_credentials_reach_only_their_host(
    registries: tuple[FakeRegistry, FakeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = registries
    env_credentials(monkeypatch, mine.address)

    with pytest.raises(RegistryError, match="refused access"):
        resolve(other.ref())  # what 'pyro plan' does for an oci:// environment
    assert other.authorizations() == []

    assert resolve(mine.ref()).startswith("sha256:")
    assert mine.authorizations() == [basic("alice", "s3cret")]


def test_env_registry_binds_the_credentials_when_no_host_is_named(
    registries: tuple[FakeRegistry, FakeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = registries
    env_credentials(monkeypatch, None)
    monkeypatch.setenv("PYRO_ENV_REGISTRY", f"{mine.address}/pyro")
    assert resolve(mine.ref()).startswith("sha256:")
    with pytest.raises(RegistryError, match="refused access"):
        resolve(other.ref())
    assert other.authorizations() == []


def test_unbound_env_credentials_are_sent_nowhere(
    registries: tuple[FakeRegistry, FakeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, other = registries
    env_credentials(monkeypatch, None)
    with pytest.raises(RegistryError, match="bound to no registry") as caught:
        resolve(other.ref())
    assert "PYRO_REGISTRY_HOST" in caught.value.hint
    assert other.authorizations() == []


def test_pyro_plan_sends_no_credentials_to_the_host_a_spec_names(
    registries: tuple[FakeRegistry, FakeRegistry], tmp_path: Path
) -> None:
    mine, other = registries
    spec = tmp_path / "run.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: pyro/v1
            kind: Run
            metadata: {{name: exfil}}
            spec:
              environment: "{other.ref()}"
              steps:
                - {{name: s, run: "true"}}
            """
        )
    )
    env = {
        **os.environ,
        "PYRO_REGISTRY_USERNAME": "alice",
        "PYRO_REGISTRY_PASSWORD": "s3cret",
        "PYRO_REGISTRY_HOST": mine.address,
        "PYRO_CACHE_DIR": str(tmp_path / "cache"),
        "PYRO_STATE_DIR": str(tmp_path / "state"),
    }
    code = "import sys; from pyro.cli.main import main; sys.exit(main())"
    subprocess.run(
        [sys.executable, "-c", code, "plan", str(spec)],
        env=env,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert [s.path for s in other.seen] == [MANIFEST_PATH]  # it was asked, without creds
    assert other.authorizations() == []


def test_a_location_header_cannot_lead_credentials_to_another_host(
    registries: tuple[FakeRegistry, FakeRegistry], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine, other = registries
    env_credentials(monkeypatch, mine.address)
    other.basic = None  # the thief takes anything
    upload = f"http://{other.address}/upload"
    mine.routes["HEAD", "/v2/pyro/x/blobs/sha256:" + "a" * 64] = reply(404)
    mine.routes["POST", "/v2/pyro/x/blobs/uploads/"] = reply(202, b"", {"Location": upload})
    other.routes["PATCH", "/upload"] = reply(202, b"", {"Location": upload})
    other.routes["PUT", "/upload"] = reply(201)
    blob = tmp_path / "blob"
    blob.write_bytes(b"data")

    RegistryClient(parse_oci_ref(mine.ref())).push_blob(blob, "sha256:" + "a" * 64, 4)

    assert [s.method for s in other.seen] == ["PATCH", "PUT"]
    assert other.authorizations() == []
    assert basic("alice", "s3cret") in mine.authorizations()


def test_a_redirect_cannot_lead_credentials_to_another_host(
    registries: tuple[FakeRegistry, FakeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = registries
    env_credentials(monkeypatch, mine.address)
    other.basic = None
    elsewhere = f"http://{other.address}/v2/pyro/x/manifests/1"
    mine.routes["GET", MANIFEST_PATH] = reply(302, b"", {"Location": elsewhere})
    other.routes["GET", MANIFEST_PATH] = reply(200, MANIFEST)

    assert resolve(mine.ref()).startswith("sha256:")

    assert basic("alice", "s3cret") in mine.authorizations()
    assert [s.path for s in other.seen] == [MANIFEST_PATH]
    assert other.authorizations() == []


def test_bearer_token_flow_sends_credentials_to_the_named_token_endpoint_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fake_registry() as registry, fake_registry() as tokens:
        env_credentials(monkeypatch, registry.address)
        challenge = f'Bearer realm="http://{tokens.address}/token",service="fake",scope="pull"'

        def manifest(h: http.server.BaseHTTPRequestHandler) -> None:
            if h.headers.get("Authorization") == "Bearer t0k3n":
                reply(200, MANIFEST)(h)
            else:
                reply(401, b"", {"WWW-Authenticate": challenge})(h)

        registry.routes["GET", MANIFEST_PATH] = manifest
        tokens.routes["GET", "/token"] = reply(200, b'{"token": "t0k3n"}')

        assert resolve(registry.ref()).startswith("sha256:")

        assert tokens.authorizations() == [basic("alice", "s3cret")]
        assert registry.authorizations() == ["Bearer t0k3n"]


# -- plain http -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "plain_http", "allowed"),
    [
        ("registry.example", False, True),
        ("registry.example:5000", True, False),  # --insecure to another machine
        ("10.0.0.5:5000", True, False),
        ("127.evil.example:5000", True, False),  # a DNS name, wherever it points
        ("127.0.0.1:5000", True, True),
        ("127.1.2.3", True, True),
        ("localhost:5000", True, True),
        ("[::1]:5000", True, True),
        ("[fe80::1]:5000", True, False),
    ],
)
def test_credentials_over_plain_http_only_to_loopback(
    registry: str, plain_http: bool, allowed: bool
) -> None:
    from pyro.oci.auth import may_send_credentials

    assert may_send_credentials(registry, plain_http=plain_http) is allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://auth.example/token", True),
        ("http://auth.example/token", False),
        ("http://127.0.0.1:5000/token", True),
        ("http://127.evil.example/token", False),
        ("ftp://auth.example/token", False),
    ],
)
def test_token_endpoint_rule(url: str, allowed: bool) -> None:
    from pyro.oci.auth import may_send_credentials_to_url

    assert may_send_credentials_to_url(url) is allowed


def test_insecure_client_for_another_host_never_looks_credentials_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyro.oci.auth import is_loopback

    env_credentials(monkeypatch, "registry.example:5000")
    secure = RegistryClient(parse_oci_ref("oci://registry.example:5000/x:1"))
    insecure = RegistryClient(parse_oci_ref("oci://registry.example:5000/x:1"), insecure=True)
    assert secure.plain_http is False and insecure.plain_http is True
    assert secure._oras.credentials() is not None
    assert insecure._oras.credentials() is None
    assert is_loopback("127.evil.example") is False


def test_a_dns_name_that_starts_with_127_gets_no_plain_http() -> None:
    """``127.evil.example`` resolves wherever its owner likes: it is not this machine."""
    assert RegistryClient(parse_oci_ref("oci://127.evil.example/x:1")).plain_http is False
    assert RegistryClient(parse_oci_ref("oci://127.0.0.1:5000/x:1")).plain_http is True


# -- docker config.json: per host, credential helpers -------------------------------------


def write_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def write_docker_config(tmp_path: Path, config: dict[str, object]) -> None:
    (tmp_path / "docker").mkdir(exist_ok=True)
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))


def fake_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str) -> Path:
    """``docker-credential-fake``: alice:s3cret for ``host``, not found for anything else;
    writes every host it is asked about to asked.log."""
    log = tmp_path / "asked.log"
    write_helper(
        tmp_path,
        monkeypatch,
        "fake",
        f"""\
        [ "$1" = get ] || exit 2
        read -r server
        echo "$server" >> {log}
        if [ "$server" = "{host}" ]; then
          printf '{{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}}' "$server"
        else
          echo "credentials not found in native keychain"; exit 1
        fi
        """,
    )
    return log


@pytest.mark.parametrize("where", ["credHelpers", "credsStore"])
def test_docker_credential_helper_per_host(
    registries: tuple[FakeRegistry, FakeRegistry],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    mine, other = registries
    asked = fake_helper(tmp_path, monkeypatch, mine.address)
    if where == "credHelpers":
        write_docker_config(tmp_path, {"credHelpers": {mine.address: "fake"}})
    else:
        write_docker_config(tmp_path, {"credsStore": "fake"})

    assert resolve(mine.ref()).startswith("sha256:")
    assert mine.authorizations() == [basic("alice", "s3cret")]
    with pytest.raises(RegistryError, match="refused access"):
        resolve(other.ref())
    assert other.authorizations() == []
    expected = [mine.address] + ([other.address] if where == "credsStore" else [])
    assert asked.read_text().split() == expected


def test_auths_entries_are_per_host(
    registries: tuple[FakeRegistry, FakeRegistry], tmp_path: Path
) -> None:
    mine, other = registries
    token = base64.b64encode(b"alice:s3cret").decode()
    write_docker_config(tmp_path, {"auths": {mine.address: {"auth": token}}})
    assert resolve(mine.ref()).startswith("sha256:")
    with pytest.raises(RegistryError, match="refused access"):
        resolve(other.ref())
    assert other.authorizations() == []


def test_missing_helper_is_a_clear_error_only_when_credentials_are_needed(
    registries: tuple[FakeRegistry, FakeRegistry], tmp_path: Path
) -> None:
    mine, _ = registries
    write_docker_config(tmp_path, {"credHelpers": {mine.address: "not-installed-here"}})
    with pytest.raises(RegistryError, match=r"docker-credential-not-installed-here.*not on PATH"):
        resolve(mine.ref())
    with fake_registry() as anonymous:  # asks for nothing: the broken helper is never run
        anonymous.routes["GET", MANIFEST_PATH] = reply(200, MANIFEST)
        assert resolve(anonymous.ref()).startswith("sha256:")


def test_hanging_helper_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(auth, "HELPER_TIMEOUT", 0.5, raising=False)
    pid_file = tmp_path / "pid"
    write_helper(tmp_path, monkeypatch, "hang", f"echo $$ > {pid_file}\nexec sleep 60\n")
    write_docker_config(tmp_path, {"credsStore": "hang"})
    with pytest.raises(RegistryError, match=r"did not answer within 0\.5 s; it was stopped"):
        credentials_for("registry.example")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_helper_output_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_helper(tmp_path, monkeypatch, "chatty", "exec yes\n")
    write_docker_config(tmp_path, {"credsStore": "chatty"})
    with pytest.raises(RegistryError, match="wrote more than 65536 bytes"):
        credentials_for("registry.example")


def test_failing_helper_and_bad_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_helper(tmp_path, monkeypatch, "broken", "echo 'keychain locked' >&2\nexit 3\n")
    write_docker_config(tmp_path, {"credsStore": "broken"})
    with pytest.raises(RegistryError, match=r"failed for registry.example \(exit 3\).*locked"):
        credentials_for("registry.example")
    write_docker_config(tmp_path, {"credsStore": "../../bin/sh"})
    with pytest.raises(RegistryError, match="invalid credential helper"):
        credentials_for("registry.example")
