"""The MCP ``stdin`` argument: bounded, with an error naming the setting that raises it."""

from __future__ import annotations

import pytest

from pyro.errors import UsageError
from pyro.mcp.stdin import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, max_bytes, stdin_bytes


def test_default_cap_and_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_BYTES_ENV, raising=False)
    assert max_bytes() == DEFAULT_MAX_BYTES
    assert stdin_bytes(None) is None
    assert stdin_bytes("é") == "é".encode()
    assert len(stdin_bytes("x" * DEFAULT_MAX_BYTES) or b"") == DEFAULT_MAX_BYTES
    with pytest.raises(UsageError, match=f"stdin is {DEFAULT_MAX_BYTES + 1} bytes") as caught:
        stdin_bytes("x" * (DEFAULT_MAX_BYTES + 1))
    assert MAX_BYTES_ENV in (caught.value.hint or "")


def test_the_setting_counts_utf8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "3")
    assert stdin_bytes("abc") == b"abc"
    with pytest.raises(UsageError, match="stdin is 4 bytes; this server takes at most 3"):
        stdin_bytes("éé")


@pytest.mark.parametrize("value", ["-1", "lots", "1e6", "²", str(1 << 40)])
def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, value)
    with pytest.raises(UsageError, match=f"{MAX_BYTES_ENV} is {value!r}"):
        stdin_bytes("a")
