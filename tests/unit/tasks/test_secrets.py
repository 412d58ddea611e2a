"""Secrets: parsing, validation, storage (0600) and redaction."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pyro.errors import UsageError
from pyro.tasks.secrets import Redactor, SecretStore, parse_secret_items


def test_items_and_files_are_parsed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    secrets = parse_secret_items(["API_KEY=s3cr3t=with=equals"], [f"TOKEN={token}"])
    assert secrets == {"API_KEY": "s3cr3t=with=equals", "TOKEN": "from-a-file"}


@pytest.mark.parametrize(
    ("items", "files", "message"),
    [
        (["NOEQUALS"], [], "is not NAME=VALUE"),
        (["1BAD=value1"], [], "not a valid environment variable name"),
        (["SHORT=abc"], [], "shorter than 4 characters"),
        (["A=value1", "A=value2"], [], "given twice"),
        ([], ["F=/nonexistent/file"], "cannot read secret file"),
        ([], ["F"], "is not NAME=PATH"),
    ],
)
def test_bad_secrets_are_refused(items: list[str], files: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_secret_items(items, files)
    assert info.value.hint


def test_redactor_replaces_every_value_longest_first() -> None:
    redact = Redactor({"SHORT": "abcd", "LONG": "abcdefgh", "OTHER": "x.y*z"})
    text = "1 abcdefgh 2 abcd 3 x.y*z 4 abcdabcd"
    assert redact(text) == (
        "1 [REDACTED:LONG] 2 [REDACTED:SHORT] 3 [REDACTED:OTHER] 4 [REDACTED:SHORT][REDACTED:SHORT]"
    )
    assert Redactor({})("unchanged") == "unchanged"


def test_store_is_private_and_round_trips(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.save({"API_KEY": "value-1234"})
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == {"API_KEY": "value-1234"}
    assert store.env_for(["API_KEY"]) == {"API_KEY": "value-1234"}
    with pytest.raises(UsageError, match="no secret named 'NOPE'") as info:
        store.env_for(["NOPE"])
    assert "API_KEY" in info.value.hint


def test_missing_store_means_no_secrets(tmp_path: Path) -> None:
    assert SecretStore(tmp_path).load() == {}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_stream_redaction_catches_values_split_across_chunks(size: int) -> None:
    redact = Redactor({"SHORT": "abcd", "LONG": "abcdefgh"})
    text = b"x abcdefgh y abcd z abcdabcdefgh! abc"
    got: list[bytes] = []
    stream = redact.stream(got.append)
    for start in range(0, len(text), size):
        stream.feed(text[start : start + size])
    stream.close()
    assert b"".join(got).decode() == redact(text.decode())
    assert b"".join(got) == (
        b"x [REDACTED:LONG] y [REDACTED:SHORT] z [REDACTED:SHORT][REDACTED:LONG]! abc"
    )


def test_stream_without_secrets_passes_chunks_through() -> None:
    got: list[bytes] = []
    stream = Redactor({}).stream(got.append)
    stream.feed(b"a")
    stream.feed(b"b")
    stream.close()
    assert got == [b"a", b"b"]
