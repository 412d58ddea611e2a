"""An Environment spec built from a container image: ``from`` or ``kernel`` + ``rootfs``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pyro.spec.model import EnvironmentSpec

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
