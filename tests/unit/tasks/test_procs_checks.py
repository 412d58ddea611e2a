"""What shells and services refuse before anything reaches a guest."""

from __future__ import annotations

import pytest

from pyro.errors import UsageError
from pyro.guest.procs import check_signal, check_size
from pyro.tasks.procs import agent_name, check_name
from pyro.tasks.service_specs import Readiness
from pyro.tasks.services import READY_COMMAND_MAX, check_readiness


@pytest.mark.parametrize(
    ("readiness", "words"),
    [
        (Readiness(http_path="/health"), "needs the port"),
        (Readiness(port=80, command="true"), "one readiness check"),
        (Readiness(port=0), "out of range"),
        (Readiness(port=8000, http_path="health"), "bad readiness HTTP path"),
        (Readiness(port=8000, http_path="/a b"), "bad readiness HTTP path"),
        (Readiness(command="true", timeout_seconds=0), "timeout 0 s is out of range"),
        (Readiness(), "one readiness check"),
    ],
)
def test_bad_readiness_checks(readiness: Readiness, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        check_readiness(readiness)


def test_good_readiness_checks() -> None:
    for readiness in (
        None,
        Readiness(port=8000),
        Readiness(port=8000, http_path="/health?x=1"),
        Readiness(command="test -e /tmp/up", timeout_seconds=5),
    ):
        check_readiness(readiness)
    assert Readiness(port=80, http_path="/").describe() == "HTTP GET 127.0.0.1:80/ < 400"


@pytest.mark.parametrize("name", ["", "Web", "-x", "a" * 49, "a/b", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError, match="bad service name"):
        check_name("service", name)


def test_kinds_never_share_an_agent_name() -> None:
    assert agent_name("shell", "web") == "sh.web"
    assert agent_name("service", "web") == "svc.web"
    assert len(agent_name("service", "a" * 48)) <= 64  # the agent's limit


def test_signals_and_sizes() -> None:
    assert check_signal("INT") == 2 and check_signal("sigterm") == 15 and check_signal("9") == 9
    for bad in ("FOO", 0, 65):
        with pytest.raises(UsageError):
            check_signal(bad)
    check_size(1, 1000)
    with pytest.raises(UsageError, match="rows 0 is out of range"):
        check_size(0, 80)


@pytest.mark.parametrize(
    ("readiness", "words"),
    [
        # the agent's probe takes printable ASCII only: the service must not start first
        (Readiness(port=8000, http_path="/h\u00e9alth"), "bad readiness HTTP path"),
        (Readiness(port=8000, http_path="/" + "a" * 1024), "bad readiness HTTP path"),
        (Readiness(port=8000, http_path="/a\x7fb"), "bad readiness HTTP path"),
        # stored with the task on the host and run every 0.25 s
        (Readiness(command="x" * (READY_COMMAND_MAX + 1)), "bad readiness command"),
        (Readiness(command="  "), "bad readiness command"),
        (Readiness(command="true\0false"), "bad readiness command"),
    ],
)
def test_readiness_checks_the_guest_would_refuse_are_refused_first(
    readiness: Readiness, words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        check_readiness(readiness)
