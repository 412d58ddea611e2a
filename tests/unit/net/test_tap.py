"""Firecracker TAP plumbing logic: pool allocation, leases, teardown (commands recorded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyro.errors import NetworkError
from pyro.net import tap
from pyro.net.policy import NetworkConfig


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    ran: list[list[str]] = []

    def fake_run(argv: list[str], *, netns: str | None, stdin: str | None = None) -> str:
        ran.append([*argv, *([f"<{stdin}>"] if stdin else [])])
        return ""

    monkeypatch.setattr(tap, "_run", fake_run)
    monkeypatch.setenv("PYRO_NET_FIREWALL", "nft")
    return ran


def test_leases_never_collide_and_are_reused_after_teardown(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    net = tap.TapNetwork(tmp_path, pool="10.99.0.0/28")  # room for four /30 subnets
    leases = [net.setup(f"vm{i}", NetworkConfig(policy="egress"))[0] for i in range(4)]
    assert len({lease.guest_ip for lease in leases}) == 4
    assert len({lease.mac for lease in leases}) == 4
    assert [lease.host_ip for lease in leases][:2] == ["10.99.0.1", "10.99.0.5"]
    with pytest.raises(NetworkError, match="exhausted"):
        net.setup("vm4", NetworkConfig(policy="egress"))
    net.teardown("vm1")
    again, _ = net.setup("vm5", NetworkConfig(policy="egress"))
    assert again.guest_ip == leases[1].guest_ip
    assert sorted(lease.vm_id for lease in net.leases()) == ["vm0", "vm2", "vm3", "vm5"]


def test_setup_failure_removes_what_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []

    def failing(argv: list[str], *, netns: str | None, stdin: str | None = None) -> str:
        ran.append(argv)
        if argv[-1] == "-":  # the nft script
            raise NetworkError("nft failed")
        return ""

    monkeypatch.setattr(tap, "_run", failing)
    monkeypatch.setenv("PYRO_NET_FIREWALL", "nft")
    net = tap.TapNetwork(tmp_path)
    with pytest.raises(NetworkError):
        net.setup("vmx", NetworkConfig(policy="egress"))
    assert net.leases() == []
    assert ["ip", "link", "del", "ptvmx"] in ran


def test_allowlist_loopback_means_the_tap_address(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    net = tap.TapNetwork(tmp_path)
    lease, hosts = net.setup("vma", NetworkConfig(policy="allowlist", allow=("127.0.0.1:8080",)))
    script = next(c[-1] for c in commands if c[0].endswith("nft") and c[1] == "-f")
    assert f"{lease.host_ip} . 8080" in script and hosts == ()
    assert lease.guest_cmdline() == (f"pyro.net={lease.guest_ip}/30,{lease.host_ip}",)


def test_reap_leases_skips_running_vms_and_live_owners(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    net = tap.TapNetwork(tmp_path)
    for vm_id in ("alive", "dead", "ownerless"):
        net.setup(vm_id, NetworkConfig(policy="off", publish=((1, 2),)))
    # "dead" and "ownerless" were made by a process that no longer exists.
    for vm_id in ("dead", "ownerless"):
        path = tmp_path / "net" / "leases" / f"{vm_id}.json"
        data = json.loads(path.read_text())
        data["owner_ticks"] = -1.0
        path.write_text(json.dumps(data))
    reaped = tap.reap_leases(tmp_path, lambda vm_id: vm_id == "dead")
    assert reaped == ["ownerless"]
    assert sorted(lease.vm_id for lease in net.leases()) == ["alive", "dead"]
    assert tap.owner_alive(net.leases()[0]) and net.leases()[0].owner_pid == os.getpid()


def test_tap_name_fits_the_kernel_limit() -> None:
    assert len(tap.tap_name("0123456789abcdef")) <= 15


def test_firecracker_gets_the_interface_and_kernel_parameters(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    from pyro.vmm.base import VMConfig
    from pyro.vmm.firecracker import api_requests

    lease, hosts = tap.TapNetwork(tmp_path).setup("vmf", NetworkConfig(policy="egress"))
    config = VMConfig(
        vm_id="vmf",
        workdir=tmp_path,
        kernel=tmp_path / "k",
        initrd=tmp_path / "i",
        rootfs=tmp_path / "r",
        vcpus=1,
        memory_mib=128,
    )
    calls = dict(api_requests(config, tmp_path / "d", lease, lease.guest_cmdline(hosts)))
    assert calls["/network-interfaces/eth0"] == {
        "iface_id": "eth0",
        "host_dev_name": lease.tap,
        "guest_mac": lease.mac,
    }
    assert f"pyro.net={lease.guest_ip}/30,{lease.host_ip}" in calls["/boot-source"]["boot_args"]
    assert list(calls)[-1] == "/actions"


def test_unknown_firewall_choice_is_a_clear_error(
    tmp_path: Path, commands: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_NET_FIREWALL", "pf")
    with pytest.raises(NetworkError, match="PYRO_NET_FIREWALL"):
        tap.TapNetwork(tmp_path).setup("vmz", NetworkConfig(policy="egress"))
    assert tap.TapNetwork(tmp_path).leases() == []


@pytest.mark.hostile
def test_allowlist_names_never_lead_to_loopback_or_metadata(
    tmp_path: Path, commands: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {
        "evil.example": ["169.254.169.254", "127.0.0.1"],
        "cdn.example": ["127.0.0.1", "93.184.216.34"],
    }
    monkeypatch.setattr(tap, "_resolve", lambda host: answers[host])
    net = tap.TapNetwork(tmp_path)
    with pytest.raises(NetworkError, match=r"evil\.example.*may not lead to"):
        net.setup("vmb", NetworkConfig(policy="allowlist", allow=("evil.example:80",)))
    _, hosts = net.setup("vmc", NetworkConfig(policy="allowlist", allow=("cdn.example:443",)))
    script = next(c[-1] for c in commands if c[0].endswith("nft") and c[1] == "-f")
    assert "93.184.216.34 . 443" in script and "127.0.0.1" not in script
    assert hosts == (("cdn.example", "93.184.216.34"),)


def test_allowlist_loopback_in_any_form_means_the_tap_address(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    net = tap.TapNetwork(tmp_path)
    lease, hosts = net.setup("vmd", NetworkConfig(policy="allowlist", allow=("2130706433:8080",)))
    script = next(c[-1] for c in commands if c[0].endswith("nft") and c[1] == "-f")
    assert f"{lease.host_ip} . 8080" in script and hosts == ()
