from __future__ import annotations

from pathlib import Path

from server.embedded.journal import Journal, RecordKind


def test_records_replay_in_order_and_survive_reopen(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.bin")
    journal.append(RecordKind.EVENTS, b"one")
    journal.append(RecordKind.UPSERT_USER, b"two")
    journal.close()
    reopened = Journal(tmp_path / "j.bin")
    assert list(reopened.replay()) == [(RecordKind.EVENTS, b"one"), (RecordKind.UPSERT_USER, b"two")]
    reopened.close()


def test_corrupt_tail_is_truncated_and_appends_continue(tmp_path: Path) -> None:
    path = tmp_path / "j.bin"
    journal = Journal(path)
    journal.append(RecordKind.EVENTS, b"good")
    journal.close()
    with open(path, "ab") as f:
        f.write(b"\x05\x00\x00\x00\x00\x00\x00\x00\x01abc")  # bad CRC, short payload
    reopened = Journal(path)
    reopened.append(RecordKind.EVENTS, b"after")
    assert [p for _, p in reopened.replay()] == [b"good", b"after"]
    reopened.close()
