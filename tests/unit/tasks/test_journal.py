"""The command journal: append, read all, read the tail, survive a torn line."""

from __future__ import annotations

from pathlib import Path

from pyro.tasks.journal import Journal, JournalEntry, cap_text


def entry(seq: int, **fields: object) -> JournalEntry:
    data: dict[str, object] = {
        "seq": seq,
        "argv": ["echo", str(seq)],
        "cwd": "/workspace",
        "exit_code": 0,
        "started_at": 1.0,
        "finished_at": 2.0,
        "duration_ms": 1000,
        "stdout": f"{seq}\n",
    }
    data.update(fields)
    return JournalEntry.model_validate(data)


def test_append_then_read_all_and_tail(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.entries() == [] and journal.last() is None
    for seq in range(1, 301):
        journal.append(entry(seq, stdout="x" * 1000))
    assert [e.seq for e in journal.entries()] == list(range(1, 301))
    assert [e.seq for e in journal.entries(tail=3)] == [298, 299, 300]
    assert [e.seq for e in journal.entries(tail=500)] == list(range(1, 301))
    assert journal.entries(tail=0) == []
    last = journal.last()
    assert last is not None and last.seq == 300


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(entry(1))
    with journal.path.open("ab") as f:
        f.write(b'{"seq": 2, "argv": ["ec')
    assert [e.seq for e in journal.entries()] == [1]
    assert [e.seq for e in journal.entries(tail=1)] == [1]


def test_cap_text_cuts_on_utf8_boundaries() -> None:
    assert cap_text("short", 10) == ("short", False)
    text, cut = cap_text("é" * 10, 5)
    assert cut and text == "éé"
