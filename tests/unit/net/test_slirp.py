"""Network policy → QEMU user-mode networking arguments and guest kernel parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.errors import NetworkError
from pyro.net.policy import NetworkConfig
from pyro.net.slirp import RELAY, parse_allow, plan_forwards, slirp_setup
from pyro.vmm.base import VMConfig
from pyro.vmm.qemu import SANDBOX, SANDBOX_RELAY, build_argv


def netdev(setup_argv: tuple[str, ...]) -> list[str]:
    return setup_argv[1].split(",")


def test_off_has_no_device() -> None:
    setup = slirp_setup(NetworkConfig())
    assert setup.argv == () and setup.cmdline == () and not setup.needs_spawn


def test_egress_user_networking_with_guest_address() -> None:
    setup = slirp_setup(NetworkConfig(policy="egress"))
    assert setup.argv[0] == "-netdev" and setup.argv[2:] == (
        "-device",
        "virtio-net-device,netdev=net0",
    )
    assert "restrict=on" not in netdev(setup.argv)
    assert setup.cmdline == ("pyro.net=10.0.2.15/24,10.0.2.2,10.0.2.3",)
    assert not setup.needs_spawn


def test_publish_binds_loopback_only() -> None:
    setup = slirp_setup(NetworkConfig(policy="egress", publish=((8080, 80), (9000, 9000))))
    options = netdev(setup.argv)
    assert "hostfwd=tcp:127.0.0.1:8080-:80" in options
    assert "hostfwd=tcp:127.0.0.1:9000-:9000" in options


def test_off_with_publish_is_a_restricted_device() -> None:
    setup = slirp_setup(NetworkConfig(policy="off", publish=((8080, 80),)))
    options = netdev(setup.argv)
    assert "restrict=on" in options and "hostfwd=tcp:127.0.0.1:8080-:80" in options
    assert not any(o.startswith("guestfwd") for o in options)
    assert setup.cmdline == ("pyro.net=10.0.2.15/24,10.0.2.254",)


def test_allowlist_restricts_and_forwards_each_destination() -> None:
    net = NetworkConfig(policy="allowlist", allow=("127.0.0.1:8080", "example.com"))
    setup = slirp_setup(net, vm_id="vmx", python="/usr/bin/python3")
    options = setup.argv[1].split(",guestfwd=")
    assert "restrict=on" in options[0] and "host=10.0.2.254" in options[0]
    rules = sorted(options[1:])
    # Each relay carries its VM's tag: it finds its QEMU by it, and is found when the VM goes.
    relay = f"/usr/bin/python3 -I -S {RELAY} pyro-vmx"
    assert rules == sorted(
        [
            f"tcp:10.0.2.2:8080-cmd:{relay} 127.0.0.1 8080",
            f"tcp:10.0.2.100:80-cmd:{relay} example.com 80",
            f"tcp:10.0.2.100:443-cmd:{relay} example.com 443",
        ]
    )
    assert setup.needs_spawn
    # No DNS server under the allowlist; names resolve through /etc/hosts only.
    assert setup.cmdline == (
        "pyro.net=10.0.2.15/24,10.0.2.254",
        "pyro.hosts=example.com=10.0.2.100",
    )


def test_relay_command_escapes_commas_for_qemu() -> None:
    setup = slirp_setup(
        NetworkConfig(policy="allowlist", allow=("localhost:1",)), python="/opt/a,b/python"
    )
    assert "cmd:/opt/a,,b/python -I" in setup.argv[1]


def test_plan_forwards_shares_addresses_per_host() -> None:
    forwards, hosts = plan_forwards(("a.example:1", "a.example:2", "10.9.9.9:3", "localhost:4"))
    by_target = {(f.host, f.port): f.guest_addr for f in forwards}
    assert by_target == {
        ("a.example", 1): "10.0.2.100",
        ("a.example", 2): "10.0.2.100",
        ("10.9.9.9", 3): "10.0.2.101",
        ("127.0.0.1", 4): "10.0.2.2",
    }
    assert hosts == [("a.example", "10.0.2.100")]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("example.com", ("example.com", (80, 443))),
        ("Example.COM.:8443", ("example.com", (8443,))),
        ("127.0.0.1:5", ("127.0.0.1", (5,))),
        # IPv4 addresses in every form inet_aton (so connect) reads, as the kernel would.
        ("127.1:5", ("127.0.0.1", (5,))),
        ("2130706433:5", ("127.0.0.1", (5,))),
        ("0x7f.1:5", ("127.0.0.1", (5,))),
        ("169.254.43518", ("169.254.169.254", (80, 443))),
    ],
)
def test_parse_allow(entry: str, expected: tuple[str, tuple[int, ...]]) -> None:
    assert parse_allow(entry) == expected


@pytest.mark.hostile
@pytest.mark.parametrize("entry", ["127.1:8080", "2130706433:8080", "0x7f.1:8080"])
def test_loopback_in_any_form_is_the_host_alias(entry: str) -> None:
    (forward,), hosts = plan_forwards((entry,))
    assert (forward.guest_addr, forward.host, forward.port) == ("10.0.2.2", "127.0.0.1", 8080)
    assert hosts == []  # an address, not a name for /etc/hosts


@pytest.mark.parametrize("entry", ["", ":80", "host:0", "host:70000", "a b", "-bad.example"])
def test_parse_allow_rejects(entry: str) -> None:
    with pytest.raises(NetworkError):
        parse_allow(entry)


def test_too_many_host_names_for_the_kernel_command_line() -> None:
    names = tuple(f"{'x' * 60}{i}.example" for i in range(30))
    with pytest.raises(NetworkError, match="kernel command line"):
        slirp_setup(NetworkConfig(policy="allowlist", allow=names))


def test_build_argv_relaxes_the_sandbox_only_for_the_allowlist(tmp_path: Path) -> None:
    def argv(net: NetworkConfig | None) -> list[str]:
        config = VMConfig(
            vm_id="x",
            workdir=tmp_path,
            kernel=tmp_path / "k",
            initrd=tmp_path / "i",
            rootfs=tmp_path / "r",
            vcpus=1,
            memory_mib=128,
            network=net,
        )
        return build_argv(config, accel="tcg", binary="qemu")

    plain = argv(None)
    assert "-netdev" not in plain and plain[plain.index("-sandbox") + 1] == SANDBOX
    egress = argv(NetworkConfig(policy="egress"))
    assert egress[egress.index("-sandbox") + 1] == SANDBOX
    assert "pyro.net=10.0.2.15/24,10.0.2.2,10.0.2.3" in egress[egress.index("-append") + 1]
    allow = argv(NetworkConfig(policy="allowlist", allow=("localhost:80",)))
    assert allow[allow.index("-sandbox") + 1] == SANDBOX_RELAY


def test_network_config_round_trip_and_errors() -> None:
    net = NetworkConfig(policy="allowlist", allow=("a:1",), publish=((8080, 80),))
    assert NetworkConfig.from_dict(net.to_dict()) == net
    assert NetworkConfig.from_dict(None) == NetworkConfig()
    from pyro.errors import VMMError

    with pytest.raises(VMMError):
        NetworkConfig.from_dict({"policy": "everything"})
    with pytest.raises(VMMError):
        NetworkConfig.from_dict({"policy": "egress", "publish": [{"host": "x"}]})
