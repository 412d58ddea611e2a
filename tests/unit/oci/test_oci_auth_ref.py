"""Registry credentials and oci:// reference helpers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pyro.errors import RegistryError, UsageError
from pyro.oci.auth import credentials_for
from pyro.oci.client import RegistryClient
from pyro.oci.reference import parse_oci_ref, pinned, resolve


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYRO_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("PYRO_REGISTRY_PASSWORD", raising=False)
    monkeypatch.delenv("PYRO_REGISTRY_HOST", raising=False)
    monkeypatch.delenv("PYRO_ENV_REGISTRY", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


def write_docker_config(tmp_path: Path, auths: dict[str, object]) -> None:
    (tmp_path / "docker").mkdir(exist_ok=True)
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": auths}))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_anonymous_by_default() -> None:
    assert credentials_for("registry.example:5000") is None


def test_environment_variables_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_docker_config(tmp_path, {"r.example": {"auth": b64("docker:pw")}})
    monkeypatch.setenv("PYRO_REGISTRY_USERNAME", "env")
    monkeypatch.setenv("PYRO_REGISTRY_PASSWORD", "secret")
    monkeypatch.setenv("PYRO_REGISTRY_HOST", "r.example")
    creds = credentials_for("r.example")
    assert creds is not None and (creds.username, creds.password) == ("env", "secret")
    assert "secret" not in repr(creds)


def test_half_set_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_REGISTRY_USERNAME", "env")
    with pytest.raises(RegistryError, match="only one of"):
        credentials_for("r.example")


@pytest.mark.parametrize("key", ["r.example:5000", "https://r.example:5000"])
def test_docker_config_auths(tmp_path: Path, key: str) -> None:
    write_docker_config(tmp_path, {key: {"auth": b64("alice:pa:ss")}})
    creds = credentials_for("r.example:5000")
    assert creds is not None and (creds.username, creds.password) == ("alice", "pa:ss")
    assert credentials_for("other.example") is None


def test_malformed_docker_auth(tmp_path: Path) -> None:
    write_docker_config(tmp_path, {"r.example": {"auth": "!!notbase64"}})
    with pytest.raises(RegistryError, match="not valid base64"):
        credentials_for("r.example")
    write_docker_config(tmp_path, {"r.example": {"auth": b64("no-colon")}})
    with pytest.raises(RegistryError, match="USER:PASSWORD"):
        credentials_for("r.example")


def test_unreadable_docker_config(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text("{broken")
    with pytest.raises(RegistryError, match="cannot read docker credentials"):
        credentials_for("r.example")


def test_parse_oci_ref() -> None:
    ref = parse_oci_ref("oci://127.0.0.1:5000/pyro/debian:12")
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "pyro/debian", "12")
    digest = "sha256:" + "a" * 64
    assert str(pinned(ref, digest)) == f"oci://127.0.0.1:5000/pyro/debian:12@{digest}"
    for bad in ("debian:12", "oci://", "oci://host/UPPER", "https://host/x"):
        with pytest.raises(UsageError):
            parse_oci_ref(bad)


def test_resolve_of_a_digest_ref_asks_nobody() -> None:
    digest = "sha256:" + "b" * 64
    assert resolve(f"oci://127.0.0.1:9/x@{digest}") == digest


@pytest.mark.parametrize(
    ("ref", "insecure", "plain"),
    [
        ("oci://127.0.0.1:5000/x:1", False, True),
        ("oci://localhost:5000/x:1", False, True),
        ("oci://registry.example/x:1", False, False),
        ("oci://registry.example/x:1", True, True),
        ("oci://10.0.0.5:5000/x:1", False, False),
    ],
)
def test_plain_http_only_for_loopback_or_insecure(ref: str, insecure: bool, plain: bool) -> None:
    assert RegistryClient(parse_oci_ref(ref), insecure=insecure).plain_http is plain
