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
from pyro.net.tap import TapNetwork, tap_name
from pyro.vmm.base import NetworkConfig

SBIN = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip", path=SBIN) or not shutil.which("nft", path=SBIN),
    reason="needs root, iproute2 and nftables (network namespaces, TAP devices, nft)",
)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pyro-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
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
from pyro.vmm.base import NetworkConfig
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
