"""Backend selection and KVM-kind detection, with fake probes and fake /proc paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.errors import BackendUnavailableError
from pyro.plan.inventory import BackendInfo, KvmKind
from pyro.vmm import BACKENDS, get_backend, select_backend
from pyro.vmm.probe import PVM_REASON, _kvm_backend, _short_version, detect_kvm

OK = dict(usable=True, can_exec=True)
NO = dict(usable=False, can_exec=False, reason="nope")


def _probe(fc: dict[str, object], kvm: dict[str, object], tcg: dict[str, object]):  # type: ignore[no-untyped-def]
    infos = [
        BackendInfo(name="firecracker", **fc),  # type: ignore[arg-type]
        BackendInfo(name="qemu-kvm", **kvm),  # type: ignore[arg-type]
        BackendInfo(name="qemu-tcg", **tcg),  # type: ignore[arg-type]
    ]
    return lambda: infos


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRO_BACKEND", raising=False)


@pytest.mark.parametrize(
    ("fc", "kvm", "expected"),
    [(OK, OK, "firecracker"), (NO, OK, "qemu-kvm"), (NO, NO, "qemu-tcg")],
)
def test_auto_prefers_firecracker_then_kvm_then_tcg(
    fc: dict[str, object], kvm: dict[str, object], expected: str
) -> None:
    assert select_backend(None, probe=_probe(fc, kvm, OK)).name == expected


def test_auto_skips_backends_that_cannot_exec() -> None:
    boots_only = dict(usable=True, can_exec=False, reason=PVM_REASON)
    assert select_backend(probe=_probe(boots_only, boots_only, OK)).name == "qemu-tcg"


def test_auto_with_nothing_usable_lists_every_reason() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        select_backend(probe=_probe(NO, NO, dict(usable=False, reason="no qemu")))
    assert "firecracker: nope" in info.value.summary
    assert "qemu-tcg: no qemu" in info.value.summary


def test_explicit_choice_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _probe(OK, OK, OK)
    assert select_backend("qemu-tcg", probe=probe).name == "qemu-tcg"
    monkeypatch.setenv("PYRO_BACKEND", "qemu-kvm")
    assert select_backend(probe=probe).name == "qemu-kvm"
    assert select_backend("firecracker", probe=probe).name == "firecracker"  # arg beats env
    monkeypatch.setenv("PYRO_BACKEND", "auto")
    assert select_backend(probe=probe).name == "firecracker"


def test_explicit_unusable_backend_says_why() -> None:
    with pytest.raises(BackendUnavailableError, match="nope"):
        select_backend("qemu-kvm", probe=_probe(OK, NO, OK))


def test_unknown_backend_name() -> None:
    with pytest.raises(BackendUnavailableError, match="unknown backend 'xen'") as info:
        get_backend("xen")
    assert "qemu-tcg" in info.value.hint


def test_registry_names_match() -> None:
    assert {name: b.name for name, b in BACKENDS.items()} == {n: n for n in BACKENDS}


def _fake_host(tmp_path: Path, *, kvm: bool, flags: str, pvm_module: bool) -> dict[str, Path]:
    dev = tmp_path / "kvm"
    if kvm:
        dev.touch()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    modules = tmp_path / "module"
    (modules / ("kvm_pvm" if pvm_module else "kvm_intel")).mkdir(parents=True)
    return {"dev_kvm": dev, "cpuinfo": cpuinfo, "sys_module": modules}


@pytest.mark.parametrize(
    ("kvm", "flags", "pvm_module", "expected"),
    [
        (True, "vmx", False, "hardware"),
        (True, "svm", False, "hardware"),
        (True, "", False, "pvm"),  # /dev/kvm without vmx/svm
        (True, "vmx", True, "pvm"),  # kvm_pvm loaded wins
        (False, "vmx", False, "none"),
    ],
)
def test_detect_kvm(
    tmp_path: Path, kvm: bool, flags: str, pvm_module: bool, expected: KvmKind
) -> None:
    paths = _fake_host(tmp_path, kvm=kvm, flags=flags, pvm_module=pvm_module)
    assert detect_kvm(**paths) == expected


def test_kvm_backends_on_pvm_are_not_usable() -> None:
    info = _kvm_backend("qemu-kvm", Path("/usr/bin/qemu"), "7.2", "pvm", missing="x")
    assert (info.usable, info.can_exec) == (False, False)
    assert "PVM" in info.reason


def test_missing_binary_reason() -> None:
    info = _kvm_backend("firecracker", None, None, "hardware", missing="no firecracker")
    assert not info.usable
    assert info.reason == "no firecracker"


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", "7.2.22"),
        ("Firecracker v1.12.1", "1.12.1"),
    ],
)
def test_short_version(line: str, version: str) -> None:
    assert _short_version(line) == version
