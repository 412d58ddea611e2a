"""``pyro.machines.exec``: the one way a command runs in a VM and its end becomes an exit code.

The commands go through pyro's real agent client to a fake guest that speaks the wire
protocol (tests/helpers/vmm.py), so argv, env, cwd, timeout and caps are checked as the
agent receives them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro.errors import GuestError, NotFoundError, StateError, UsageError
from pyro.guest.client import AgentClient, ExecResult
from pyro.machines.create import Shape, create
from pyro.machines.exec import (
    OUTPUT_CAP,
    TIMEOUT_EXIT_CODE,
    argv_of,
    exec_once,
    exit_code_of,
    run_command,
)
from pyro.machines.registry import VMRegistry
from tests.helpers.vmm import Exec, FakeBackend, Reply


def result(**fields: object) -> ExecResult:
    base: dict[str, object] = {
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "stdout": b"",
        "stderr": b"",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "duration_s": 0.0,
    }
    return ExecResult(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"exit_code": 0}, 0),
        ({"exit_code": 3}, 3),
        ({"exit_code": None, "signal": 9}, 137),
        ({"exit_code": None, "signal": None}, 128),
        ({"exit_code": None, "signal": 9, "timed_out": True}, TIMEOUT_EXIT_CODE),
        ({"exit_code": 0, "timed_out": True}, TIMEOUT_EXIT_CODE),
    ],
    ids=["ok", "failed", "signal", "no-code", "timeout-killed", "timeout-wins"],
)
def test_a_result_becomes_the_exit_code_a_shell_reports(
    fields: dict[str, object], code: int
) -> None:
    assert exit_code_of(result(**fields)) == code
    assert TIMEOUT_EXIT_CODE == 124


def test_a_string_runs_with_sh_c_and_a_list_is_the_argv() -> None:
    assert argv_of("echo $HOME && ls") == ["/bin/sh", "-c", "echo $HOME && ls"]
    words = ("ls", "-l")
    assert argv_of(words) == ["ls", "-l"]
    with pytest.raises(UsageError, match="the command is empty"):
        argv_of([])


SHAPE = Shape(
    environment="debian:12",
    environment_digest="sha256:" + "1" * 64,
    kernel=Path("/cache/env/vmlinux"),
    initrd=Path("/cache/agent.cpio"),
    rootfs=Path("/cache/env/rootfs.ext4"),
    backend="fake",
    vcpus=1,
    memory_mib=128,
)


@pytest.fixture
def registry(tmp_path: Path) -> VMRegistry:
    return VMRegistry(tmp_path / "state")


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    return FakeBackend().install(monkeypatch)


@pytest.fixture
def client(registry: VMRegistry, backend: FakeBackend) -> Iterator[tuple[str, AgentClient]]:
    record = create(registry, SHAPE)
    _, agent = registry.start(record.id)
    with agent:
        yield record.id, agent
    registry.delete(record.id)


def test_argv_env_cwd_timeout_and_caps_reach_the_agent(
    client: tuple[str, AgentClient], backend: FakeBackend
) -> None:
    vm_id, agent = client
    out = run_command(agent, vm_id, "echo hi", timeout_s=2.5, env={"A": "1"}, cwd="/tmp")
    assert out.vm_id == vm_id and out.exit_code == 0 and not out.timed_out
    [call] = backend.execs
    assert call == Exec(
        vm_id=vm_id,
        argv=["/bin/sh", "-c", "echo hi"],
        env={"A": "1"},
        cwd="/tmp",
        timeout_ms=2500,
        stdout_cap=OUTPUT_CAP,
        stderr_cap=OUTPUT_CAP,
    )
    assert OUTPUT_CAP == 1 << 20


@pytest.mark.parametrize(
    ("reply", "code", "signal"),
    [
        (Reply(exit_code=3), 3, None),
        (Reply(exit_code=None, signal=15), 143, 15),
        (Reply(exit_code=None, signal=9, timed_out=True), TIMEOUT_EXIT_CODE, 9),
    ],
    ids=["failed", "signalled", "timed-out"],
)
def test_how_the_command_ended_is_its_exit_code(
    client: tuple[str, AgentClient], backend: FakeBackend, reply: Reply, code: int, signal: int
) -> None:
    backend.script = lambda call: reply
    vm_id, agent = client
    out = run_command(agent, vm_id, ["sleep", "9"], timeout_s=1)
    assert (out.exit_code, out.signal, out.timed_out) == (code, signal, reply.timed_out)


def test_output_is_capped_and_flagged_also_when_the_guest_ignores_the_cap(
    client: tuple[str, AgentClient], backend: FakeBackend
) -> None:
    vm_id, agent = client
    backend.script = lambda call: Reply(stdout=b"x" * 5000, stderr=b"e\xffe", honour_caps=False)
    seen: list[bytes] = []
    out = run_command(
        agent, vm_id, ["yes"], timeout_s=5, stdout_cap=1000, stderr_cap=10, on_stdout=seen.append
    )
    assert len(out.stdout) <= 1000 and out.stdout_truncated
    assert b"".join(seen) == out.stdout.encode()
    assert out.stderr == "e\ufffde" and not out.stderr_truncated  # bad UTF-8 is replaced
    backend.script = lambda call: Reply(stdout=b"y" * 5000)  # an honest agent cuts it itself
    out = run_command(agent, vm_id, ["yes"], timeout_s=5, stdout_cap=1000)
    assert out.stdout == "y" * 1000 and out.stdout_truncated


def test_exec_once_starts_the_vm_runs_and_deletes_it(
    registry: VMRegistry, backend: FakeBackend
) -> None:
    backend.script = lambda call: Reply(stdout=b"hello\n", exit_code=7)
    record = create(registry, SHAPE)
    out = exec_once(registry, record.id, ["hello"], timeout_seconds=30)
    assert (out.exit_code, out.stdout) == (7, "hello\n")
    assert out.deleted  # what MCP's vm_exec and the SDK report
    assert [c.vm_id for c in backend.configs] == [record.id]  # it was booted first
    assert backend.execs[0].timeout_ms == 30_000
    with pytest.raises(NotFoundError):
        registry.get(record.id)
    assert backend.running == set()


def test_exec_once_deletes_the_vm_also_when_the_command_breaks(
    registry: VMRegistry, backend: FakeBackend
) -> None:
    record = create(registry, SHAPE)
    with pytest.raises(UsageError):
        exec_once(registry, record.id, [], timeout_seconds=30)
    with pytest.raises(NotFoundError):
        registry.get(record.id)

    def crash(call: Exec) -> Reply:
        raise OSError("the guest went away")  # the fake agent hangs up mid-command

    backend.script = crash
    record = create(registry, SHAPE)
    registry.start(record.id)[1].close()
    with pytest.raises((GuestError, StateError)):
        exec_once(registry, record.id, ["true"], timeout_seconds=30)
    with pytest.raises(NotFoundError):
        registry.get(record.id)
    assert backend.running == set()


def test_exec_once_maps_a_broken_socket_to_a_state_error(
    registry: VMRegistry, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AgentClient, *args: object, **kwargs: object) -> ExecResult:
        raise ConnectionResetError("reset by peer")

    monkeypatch.setattr(AgentClient, "exec", broken)
    record = create(registry, SHAPE)
    with pytest.raises(StateError, match=f"lost the connection to VM {record.id}: reset by peer"):
        exec_once(registry, record.id, ["true"], timeout_seconds=30)
    with pytest.raises(NotFoundError):
        registry.get(record.id)
