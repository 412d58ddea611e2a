"""Published host ports are checked before boot."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pyro.errors import NetworkError
from pyro.net.ports import check_ports_free


@pytest.fixture
def listening() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_taken_port_is_a_clear_error(listening: int) -> None:
    with pytest.raises(NetworkError, match=f"127.0.0.1:{listening}.*already in use") as info:
        check_ports_free([listening])
    assert "another host port" in info.value.hint


def test_free_port_passes() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    check_ports_free([port])
