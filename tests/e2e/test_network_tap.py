"""Firecracker's network plumbing for real: TAP devices and nftables tables, made and
removed inside a network namespace created for the test (no guest, no host-wide change)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.net.nft import table_name
from pyro.net.policy import NetworkConfig
from pyro.net.tap import TapNetwork, tap_name
from tests.helpers.firecracker import firecracker_binary as _firecracker_binary

firecracker_binary = _firecracker_binary  # the fixture, re-exported for this module

SBIN = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip", path=SBIN) or not shutil.which("nft", path=SBIN),
    reason="needs root, iproute2 and nftables (network namespaces, TAP devices, nft)",
)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pyro-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def links(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout


def ruleset(netns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def iptables_rules(netns: str) -> str:
    return "".join(
        subprocess.run(
            ["ip", "netns", "exec", netns, "iptables-save", "-t", table],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for table in ("filter", "nat")
    )


def test_iptables_fallback_in_a_namespace(
    tmp_path: Path, netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not shutil.which("iptables-save", path=SBIN):
        pytest.skip("iptables is not installed (apt install iptables)")
    monkeypatch.setenv("PYRO_NET_FIREWALL", "iptables")
    net = TapNetwork(tmp_path, netns=netns)
    config = NetworkConfig(policy="allowlist", allow=("127.0.0.1:8080",), publish=((18080, 80),))
    lease, _ = net.setup("e2eipt1", config)
    try:
        assert lease.firewall == "iptables" and lease.tap in links(netns)
        rules = iptables_rules(netns)
        assert f"--comment {lease.table}" in rules
        assert f"-d {lease.host_ip}/32 -i {lease.tap} -p tcp" in rules
        assert f"--to-destination {lease.guest_ip}:80" in rules
    finally:
        net.teardown("e2eipt1")
    assert lease.tap not in links(netns)
    assert lease.table not in iptables_rules(netns)
    assert net.leases() == []


def test_setup_and_teardown_in_a_namespace(tmp_path: Path, netns: str) -> None:
    net = TapNetwork(tmp_path, netns=netns)
    config = NetworkConfig(policy="allowlist", allow=("127.0.0.1:8080",), publish=((18080, 80),))
    lease, _ = net.setup("e2e0net1", config)
    try:
        assert lease.tap in links(netns)
        addr = subprocess.run(
            ["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", lease.tap],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"{lease.host_ip}/30" in addr
        rules = ruleset(netns)
        assert f"table ip {lease.table}" in rules
        assert f"{lease.host_ip} . 8080" in rules
        assert f"dnat to {lease.guest_ip}:80" in rules
        # Setting up again (a persistent VM restarting) replaces, never duplicates.
        lease2, _ = net.setup("e2e0net1", config)
        assert ruleset(netns).count(f"table ip {lease2.table}") == 1
    finally:
        net.teardown("e2e0net1")
    assert lease.tap not in links(netns)
    assert "pyro_" not in ruleset(netns)
    assert net.leases() == []
    net.teardown("e2e0net1")  # idempotent


HOLDER = """
import sys, time
from pathlib import Path
from pyro.net.tap import TapNetwork
from pyro.net.policy import NetworkConfig
from tests.helpers.firecracker import firecracker_binary as _firecracker_binary

firecracker_binary = _firecracker_binary  # the fixture, re-exported for this module
TapNetwork(Path(sys.argv[1]), netns=sys.argv[2]).setup(sys.argv[3], NetworkConfig(policy="egress"))
print("ready", flush=True)
time.sleep(300)
"""


def test_kill_9_then_the_next_command_removes_everything(tmp_path: Path, netns: str) -> None:
    state = tmp_path / "state"
    vm_id = "e2ekill9net"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state), netns, vm_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert tap_name(vm_id) in links(netns)
        assert table_name(vm_id) in ruleset(netns)
        # A live owner's set-up is never reaped by another pyro command.
        env = {**os.environ, "PYRO_STATE_DIR": str(state)}
        pyro = [sys.executable, "-m", "pyro.cli", "vm", "list"]
        subprocess.run(pyro, env=env, capture_output=True, check=True, timeout=120)
        assert tap_name(vm_id) in links(netns)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    subprocess.run(pyro, env=env, capture_output=True, check=True, timeout=120)
    assert tap_name(vm_id) not in links(netns)
    assert table_name(vm_id) not in ruleset(netns)
    assert TapNetwork(state).leases() == []


FIRECRACKER_OWNER = """
import sys
from pathlib import Path
from pyro.machines.registry import VMRegistry
state, kernel, initrd, disk = map(Path, sys.argv[1:5])
registry = VMRegistry(state)
record = registry.create(
    environment="fc-net", environment_digest="sha256:0", kernel=kernel, initrd=initrd,
    rootfs=disk, backend="firecracker", vcpus=1, memory_mib=128, ephemeral=True,
    network={"policy": "egress", "publish": [{"host": 18123, "guest": 80}]},
)
print(record.id, flush=True)
registry.start(record.id, boot_timeout=600)  # killed with -9 long before
"""


@pytest.mark.guest
def test_firecracker_vm_network_is_gone_after_kill_9_and_the_next_command(
    tmp_path: Path, netns: str, firecracker_binary: Path
) -> None:
    """A real Firecracker VM with policy egress inside the test's namespace: its TAP
    device and table exist while it runs and are gone after its owner's kill -9 plus one
    ``pyro vm list`` (the guest's user space cannot run on PVM; the VMM and its network
    device can)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm for Firecracker")
    from tests.helpers.vmm import base_disk, test_kernel, tiny_initramfs

    state = tmp_path / "state"
    env = {**os.environ, "PYRO_STATE_DIR": str(state), "PYRO_FIRECRACKER": str(firecracker_binary)}
    args = [str(state), str(test_kernel()), str(tiny_initramfs(tmp_path / "initrd"))]
    args.append(str(base_disk(tmp_path)))
    in_ns = ["ip", "netns", "exec", netns, sys.executable]
    owner = subprocess.Popen(
        [*in_ns, "-c", FIRECRACKER_OWNER, *args], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        vm_id = owner.stdout.readline().strip()
        tap = tap_name(vm_id)
        for _ in range(600):  # wait (not a timing assertion) until the VMM runs
            if tap in links(netns) and "fc.sock" in os.listdir(state / "vms" / vm_id):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert tap in links(netns)
        assert f"table ip {table_name(vm_id)}" in ruleset(netns)
        assert "dnat to 172.29.0.2:80" in ruleset(netns)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    subprocess.run(
        [*in_ns, "-m", "pyro.cli", "vm", "list"], env=env, capture_output=True, timeout=120
    )
    assert tap not in links(netns)
    assert "pyro_" not in ruleset(netns)
    assert TapNetwork(state).leases() == []
    assert not (state / "vms" / vm_id).exists()
