"""Command lines and API bodies the backends produce (no VMM is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro.vmm.base import VMConfig
from pyro.vmm.firecracker import api_requests, instance_id
from pyro.vmm.qemu import SANDBOX, build_argv


def _config(**changes: object) -> VMConfig:
    fields: dict[str, object] = {
        "vm_id": "vm-1",
        "workdir": Path("/state/vms/vm-1"),
        "kernel": Path("/cache/vmlinux"),
        "initrd": Path("/cache/agent.cpio"),
        "rootfs": Path("/cache/rootfs.ext4"),
        "vcpus": 2,
        "memory_mib": 256,
    }
    fields.update(changes)
    return VMConfig(**fields)  # type: ignore[arg-type]


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_qemu_tcg_argv() -> None:
    argv = build_argv(_config(), accel="tcg", binary="qemu-system-x86_64")
    assert argv[0] == "qemu-system-x86_64"
    assert _option(argv, "-M") == ["microvm,acpi=off,x-option-roms=off,isa-serial=on"]
    assert _option(argv, "-accel") == ["tcg,tb-size=32"]
    assert _option(argv, "-cpu") == ["max"]
    assert _option(argv, "-smp") == ["2"]
    assert _option(argv, "-m") == ["256"]
    assert _option(argv, "-sandbox") == [SANDBOX]
    assert _option(argv, "-kernel") == ["/cache/vmlinux"]
    assert _option(argv, "-initrd") == ["/cache/agent.cpio"]
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert flag in argv
    assert "pyro-vm-1" in _option(argv, "-name")


def test_qemu_kvm_uses_host_cpu() -> None:
    argv = build_argv(_config(), accel="kvm", binary="qemu-system-x86_64")
    assert _option(argv, "-accel") == ["kvm"]
    assert _option(argv, "-cpu") == ["host"]


def test_qemu_sockets_and_disk_are_relative_to_the_workdir() -> None:
    argv = build_argv(_config(), accel="tcg", binary="qemu")
    chardevs = _option(argv, "-chardev")
    assert "socket,id=agent,path=agent.sock,server=on,wait=off" in chardevs
    assert "stdio,id=serial0,signal=off" in chardevs  # to the console keeper (launch.py)
    assert _option(argv, "-qmp") == ["unix:qmp.sock,server=on,wait=off"]
    assert "virtserialport,chardev=agent,name=org.pyro.agent" in _option(argv, "-device")
    (drive,) = _option(argv, "-drive")
    assert "file=overlay.qcow2,format=qcow2" in drive
    assert "/cache/rootfs.ext4" not in " ".join(argv)  # the base image is never opened rw


def test_qemu_cache_mode_follows_ephemerality() -> None:
    ephemeral = build_argv(_config(), accel="tcg", binary="q")
    persistent = build_argv(_config(ephemeral=False), accel="tcg", binary="q")
    assert "cache=unsafe" in _option(ephemeral, "-drive")[0]
    assert "cache=writeback" in _option(persistent, "-drive")[0]


def test_qemu_cmdline_extra_comes_last() -> None:
    argv = build_argv(_config(cmdline_extra=("loglevel=7", "--", "hang")), accel="tcg", binary="q")
    (append,) = _option(argv, "-append")
    assert append.startswith("console=ttyS0 ")
    assert append.endswith(" loglevel=7 -- hang")


def test_qemu_guest_ram_is_anonymous_unless_saved_or_restored() -> None:
    plain = build_argv(_config(), accel="tcg", binary="q")
    assert "-object" not in plain and "memory-backend" not in _option(plain, "-M")[0]

    saving = build_argv(_config(shared_ram=True), accel="tcg", binary="q")
    assert _option(saving, "-object") == ["memory-backend-memfd,id=ram0,size=256M,share=on"]
    assert _option(saving, "-M")[0].endswith(",memory-backend=ram0")

    restoring = build_argv(_config(), accel="tcg", binary="q", ram_file=Path("/snap/ram"))
    assert _option(restoring, "-object") == [
        "memory-backend-file,id=ram0,size=256M,mem-path=/snap/ram,share=off"
    ]  # copy-on-write: the guest never writes the saved file
    assert _option(restoring, "-M")[0].endswith(",memory-backend=ram0")


def test_firecracker_requests_in_order() -> None:
    disk = Path("/state/vms/vm-1/rootfs.ext4")
    requests = api_requests(_config(), disk)
    assert [path for path, _ in requests] == [
        "/boot-source",
        "/drives/rootfs",
        "/machine-config",
        "/vsock",
        "/actions",
    ]
    bodies = dict(requests)
    assert "pci=off" in bodies["/boot-source"]["boot_args"]
    assert bodies["/drives/rootfs"]["path_on_host"] == str(disk)
    assert bodies["/machine-config"] == {"vcpu_count": 2, "mem_size_mib": 256}
    assert bodies["/vsock"] == {"guest_cid": 3, "uds_path": "vsock.sock"}
    assert bodies["/actions"] == {"action_type": "InstanceStart"}


def test_firecracker_instance_id_is_sanitised() -> None:
    assert instance_id("vm_1.x") == "pyro-vm-1-x"
    assert len(instance_id("a" * 100)) == 64


def test_qemu_attaches_a_data_disk_after_the_root_disk() -> None:
    argv = build_argv(
        _config(data_disk=Path("/state/vms/vm,1/workspace.img")),
        accel="tcg",
        binary="qemu-system-x86_64",
    )
    drives = _option(argv, "-drive")
    assert drives[0].startswith("id=root,")  # the root disk stays /dev/vda
    image = "file=/state/vms/vm,,1/workspace.img"  # a comma is doubled in QEMU's options
    assert drives[1] == f"id=data,if=none,{image},format=raw,cache=unsafe"
    assert _option(argv, "-device")[-1] == "virtio-blk-device,drive=data,serial=pyro-data"
    assert "id=data" not in " ".join(build_argv(_config(), accel="tcg", binary="q"))


def test_firecracker_refuses_a_data_disk(tmp_path: Path) -> None:
    from pyro.errors import VMMError
    from pyro.vmm.firecracker import FirecrackerBackend

    config = _config(workdir=tmp_path, data_disk=tmp_path / "workspace.img")
    with pytest.raises(VMMError, match="does not attach data disks"):
        FirecrackerBackend(binary=tmp_path / "firecracker").spawn(config)


def test_qemu_attaches_the_spare_disk_as_named_nodes_after_the_others() -> None:
    argv = build_argv(
        _config(
            data_disk=Path("/state/vms/vm-1/workspace.img"),
            spare_disk=Path("/state/vms/vm,1/spare.img"),
        ),
        accel="tcg",
        binary="qemu-system-x86_64",
    )
    # Named nodes, so QMP can point the raw node at another file while the guest runs.
    assert _option(argv, "-blockdev") == [
        "driver=file,node-name=spare-empty,filename=/state/vms/vm,,1/spare.img,cache.no-flush=on",
        "driver=raw,node-name=spare,file=spare-empty",
    ]
    devices = _option(argv, "-device")
    assert devices[-2] == "virtio-blk-device,drive=data,serial=pyro-data"
    assert devices[-1] == "virtio-blk-device,drive=spare,serial=pyro-push"
    assert "-blockdev" not in build_argv(_config(), accel="tcg", binary="q")
