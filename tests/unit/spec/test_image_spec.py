"""An Environment spec built from a container image: ``from`` or ``kernel`` + ``rootfs``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pyro.spec.environment import EnvironmentSpec

BASE = {"apiVersion": "pyro/v1", "kind": "Environment", "metadata": {"name": "img:1"}}
KERNEL = {"fragment": "kernels/pyro-6.1.config"}


def spec(**body: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({**BASE, "spec": {"version": "1.0.0", **body}})


def test_from_an_image() -> None:
    loaded = spec(**{"from": {"image": "127.0.0.1:5000/library/python:3.12-slim"}})
    assert loaded.spec.from_ is not None
    assert loaded.spec.from_.ref == "oci://127.0.0.1:5000/library/python:3.12-slim"
    assert loaded.spec.kernel is None and loaded.spec.rootfs is None
    pinned = "oci://reg.example/app@sha256:" + "a" * 64
    assert spec(**{"from": {"image": pinned}}).spec.from_.ref == pinned  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"from": {"image": "r/x:1"}, "kernel": KERNEL}, "either 'from'"),
        ({"kernel": KERNEL}, "missing 'rootfs'"),
        ({}, "missing 'kernel' and 'rootfs'"),
        ({"from": {"image": "not a ref"}}, "image"),
        ({"from": {"image": "r/x:1", "extra": 1}}, "extra"),
    ],
)
def test_bad_recipes_are_refused(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**body)


IMAGE = {"image": "127.0.0.1:5000/library/tool:1"}


def test_files_and_setup_with_an_image() -> None:
    loaded = spec(
        **{
            "from": IMAGE,
            "files": [{"source": "app/", "target": "/opt/app"}],
            "setup": "echo built > /etc/built",
        }
    )
    setup = loaded.spec.setup
    assert setup is not None and setup.run == "echo built > /etc/built"
    assert (setup.timeout_seconds, setup.network.policy.value) == (600, "off")
    long = spec(
        **{
            "from": IMAGE,
            "setup": {"run": "true", "timeoutSeconds": 30, "network": {"policy": "egress"}},
        }
    )
    assert long.spec.setup is not None
    assert long.spec.setup.timeout_seconds == 30
    # Dumped in the long form: the short and the long spelling digest the same.
    short = spec(**{"from": IMAGE, "setup": "true"}).model_dump(mode="json", by_alias=True)
    assert short["spec"]["setup"] == {
        "run": "true",
        "timeoutSeconds": 600,
        "network": {"policy": "off", "allow": []},
    }


def test_specs_without_files_or_setup_dump_as_before() -> None:
    dumped = spec(**{"from": IMAGE}).model_dump(mode="json", by_alias=True)
    assert "files" not in dumped["spec"] and "setup" not in dumped["spec"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kernel": KERNEL, "rootfs": {}, "setup": "true"}, "go with 'from'"),
        ({"kernel": KERNEL, "rootfs": {}, "files": [{"source": "a", "target": "/a"}]}, "'from'"),
        ({"from": IMAGE, "setup": ""}, "at least 1 character"),
        ({"from": IMAGE, "setup": {"run": "true", "network": {"publish": []}}}, "publish"),
        ({"from": IMAGE, "setup": {"run": "true", "timeoutSeconds": 0}}, "timeoutSeconds"),
        ({"from": IMAGE, "setup": {"run": "x", "network": {"policy": "allowlist"}}}, "allow"),
        ({"from": IMAGE, "files": [{"source": "../out", "target": "/a"}]}, "escape"),
        ({"from": IMAGE, "files": [{"source": "/etc/passwd", "target": "/a"}]}, "relative"),
        ({"from": IMAGE, "files": [{"source": "a", "target": "/x/../etc"}]}, "'..'"),
        ({"from": IMAGE, "files": [{"source": "a", "target": "relative"}]}, "absolute"),
        ({"from": IMAGE, "files": [{"source": "a", "target": "/a"}] * 65}, "at most 64"),
    ],
)
def test_bad_files_and_setup_are_refused(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**body)
