"""The batch store's tables: rows as written, positions recorded in the same commit, conflicts refused,
maintenance that keeps both."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from feature_worker.lake.maintenance import forget_user, optimize
from feature_worker.lake.schema import EVENTS, ITEMS, USERS, EventRows, ItemRows, UserRows, utc_date
from feature_worker.lake.writer import Lake, LakeConflict, table_uri
from protos.aisle.v1 import events_pb2, users_pb2
from tests.shop import BASE_TS, event, item

pytestmark = pytest.mark.integration  # real Delta tables on disk


def events_rows(n: int, start: int = 0, user: str = "u1") -> EventRows:
    rows = EventRows()
    for i in range(start, start + n):
        e = event(
            user,
            events_pb2.PURCHASE,
            f"i{i % 3}",
            BASE_TS + i * 3_600_000,
            event_id=f"e{i}",
            price=2.5,
            quantity=2,
            item_ids=["a", "b"],
            context={"page": "home"},
            recommendation_id="r1",
        )
        rows.add(e, 1, 100 + i)
    return rows


def test_utc_date() -> None:
    assert utc_date(BASE_TS) == "2026-01-01"
    assert utc_date(BASE_TS - 1) == "2025-12-31"
    assert utc_date(0) == "1970-01-01"


def test_event_rows_keep_every_field_and_the_raw_bytes(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append(EVENTS, events_rows(30).table(), {"src": 130}, {"src": None}, "test")
    table = DeltaTable(table_uri(tmp_path, EVENTS)).to_pyarrow_table().sort_by("source_offset")
    assert table.num_rows == 30
    row = table.slice(0, 1).to_pylist()[0]
    assert row["event_id"] == "e0" and row["type"] == "PURCHASE" and row["user_id"] == "u1"
    assert row["item_ids"] == ["a", "b"] and dict(row["context"]) == {"page": "home"}
    assert row["price"] == 2.5 and row["quantity"] == 2 and row["ts_ms"] == BASE_TS
    assert row["date"] == "2026-01-01" and row["source_partition"] == 1 and row["source_offset"] == 100
    assert events_pb2.Event.FromString(row["raw"]).recommendation_id == "r1"
    assert set(table["date"].to_pylist()) == {"2026-01-01", "2026-01-02"}  # 30 hours


def test_item_and_user_change_logs(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    items = ItemRows()
    items.upsert(item("i1", brand="acme"), BASE_TS, 0, 0)
    items.delete("i1", BASE_TS + 1, 0, 1)
    users = UserRows()
    users.upsert(users_pb2.User(user_id="u1", attributes={"tier": "gold"}), BASE_TS, 0, 0)
    users.upsert(users_pb2.User(user_id="u2", consent=users_pb2.Consent(analytics=True)), BASE_TS, 0, 1)
    users.delete("u1", BASE_TS, 0, 2)
    lake.append(ITEMS, items.table(), {"src": 2}, {"src": None}, "test")
    lake.append(USERS, users.table(), {"src": 3}, {"src": None}, "test")
    got = DeltaTable(table_uri(tmp_path, ITEMS)).to_pyarrow_table().sort_by("source_offset").to_pylist()
    assert [(r["op"], r["item_id"], r["brand"]) for r in got] == [
        ("upsert", "i1", "acme"),
        ("delete", "i1", None),
    ]
    got = DeltaTable(table_uri(tmp_path, USERS)).to_pyarrow_table().sort_by("source_offset").to_pylist()
    assert [(r["op"], r["consent_analytics"]) for r in got] == [
        ("upsert", None),
        ("upsert", True),
        ("delete", None),
    ]
    assert dict(got[0]["attributes"]) == {"tier": "gold"}


def test_positions_are_recorded_with_the_rows_and_read_back(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert lake.position(EVENTS, "p0") is None
    lake.append(EVENTS, events_rows(5).table(), {"p0": 5, "p1": 7}, {"p0": None, "p1": None}, "test")
    lake.append(EVENTS, EventRows().table(), {"p0": 9}, {"p0": 5}, "test")  # dead letters only: no rows
    reopened = Lake(tmp_path)
    assert (reopened.position(EVENTS, "p0"), reopened.position(EVENTS, "p1")) == (9, 7)
    assert reopened.position(ITEMS, "p0") is None  # per table
    assert DeltaTable(table_uri(tmp_path, EVENTS)).count() == 5


def test_a_writer_that_lost_its_source_cannot_append(tmp_path: Path) -> None:
    first, second = Lake(tmp_path), Lake(tmp_path)
    first.append(EVENTS, events_rows(5).table(), {"p0": 5}, {"p0": None}, "first")
    # The second writer has an old snapshot and expects to start where nothing was recorded.
    with pytest.raises(LakeConflict):
        second.append(EVENTS, events_rows(5).table(), {"p0": 5}, {"p0": None}, "second")
    # It took the partition over at the recorded offset: the first one, still running, is refused.
    second.refresh(EVENTS)
    assert second.position(EVENTS, "p0") == 5
    second.append(EVENTS, events_rows(3, 5).table(), {"p0": 8}, {"p0": 5}, "second")
    with pytest.raises(LakeConflict):
        first.append(EVENTS, events_rows(3, 5).table(), {"p0": 8}, {"p0": 5}, "first")
    assert DeltaTable(table_uri(tmp_path, EVENTS)).count() == 8


def test_a_stale_snapshot_is_refused_by_deltas_conflict_check(tmp_path: Path) -> None:
    """The expected-position check passes on the stale snapshot; Delta's txn conflict check still refuses."""
    stale, other = Lake(tmp_path), Lake(tmp_path)
    other.append(EVENTS, events_rows(2).table(), {"p0": 2}, {}, "other")  # no expectation: a blind writer
    with pytest.raises(LakeConflict):
        stale.append(EVENTS, events_rows(2).table(), {"p0": 2}, {"p0": None}, "stale")
    assert DeltaTable(table_uri(tmp_path, EVENTS)).count() == 2


def test_optimize_compacts_and_keeps_positions(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    end = None
    for batch in range(6):
        lake.append(EVENTS, events_rows(4, batch * 4).table(), {"p0": (batch + 1) * 4}, {"p0": end}, "test")
        end = (batch + 1) * 4
    before = len(DeltaTable(table_uri(tmp_path, EVENTS)).file_uris())
    report = optimize(lake, retention_hours=0)
    table = DeltaTable(table_uri(tmp_path, EVENTS))
    assert len(table.file_uris()) < before and report[EVENTS]["files_removed"] == before
    assert table.count() == 24 and table.transaction_version("p0") == 24
    assert Counter(table.to_pyarrow_table()["event_id"].to_pylist()) == Counter(f"e{i}" for i in range(24))


def test_forget_user_deletes_their_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    rows = events_rows(3, user="o'brien")
    for i, e in enumerate([event("keep", events_pb2.VIEW, "i1", BASE_TS, event_id="k1")]):
        rows.add(e, 0, 500 + i)
    lake.append(EVENTS, rows.table(), {"p0": 1}, {"p0": None}, "test")
    users = UserRows()
    users.upsert(users_pb2.User(user_id="o'brien"), BASE_TS, 0, 0)
    lake.append(USERS, users.table(), {"p0": 1}, {"p0": None}, "test")
    assert forget_user(lake, "o'brien") == 4
    assert DeltaTable(table_uri(tmp_path, EVENTS)).to_pyarrow_table()["user_id"].to_pylist() == ["keep"]
    assert DeltaTable(table_uri(tmp_path, USERS)).count() == 0
