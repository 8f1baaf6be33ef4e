"""Reading the batch store into a Dataset: one pinned version per table, the catalog's latest state, events
checked, deduplicated and in time order."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_worker.lake.schema import EVENTS, ITEMS, USERS, EventRows, ItemRows, UserRows
from feature_worker.lake.writer import Lake
from protos.aisle.v1 import events_pb2, users_pb2
from tests.shop import BASE_TS, event, item
from trainer.data.delta import load_delta
from trainer.data.errors import DataFormatError
from trainer.data.formats import FORMATS, load

pytestmark = pytest.mark.integration  # real Delta tables


def build(root: Path) -> Lake:
    lake = Lake(root)
    items = ItemRows()
    items.upsert(item("i1", brand="old"), BASE_TS, 0, 0)
    items.upsert(item("i2"), BASE_TS, 0, 1)
    items.upsert(item("i3", in_stock=False), BASE_TS, 0, 2)
    items.delete("i2", BASE_TS, 0, 3)
    items.upsert(item("i1", brand="new"), BASE_TS, 0, 4)
    lake.append(ITEMS, items.table(), {"p": 5}, {"p": None}, "test")
    users = UserRows()
    users.upsert(users_pb2.User(user_id="u1"), BASE_TS, 0, 0)
    lake.append(USERS, users.table(), {"p": 1}, {"p": None}, "test")
    first, second = EventRows(), EventRows()
    # Two partitions, out of time order between them; e3 arrives twice (a producer's retry).
    for offset, (eid, ts) in enumerate([("e1", 30), ("e3", 10), ("e4", 10)]):
        first.add(event("u1", events_pb2.VIEW, "i1", BASE_TS + ts, event_id=eid), 0, offset)
    for offset, (eid, ts) in enumerate([("e2", 20), ("e3", 10), ("e0", 0)]):
        second.add(event("u1", events_pb2.CLICK, "i3", BASE_TS + ts, event_id=eid), 1, offset)
    lake.append(EVENTS, first.table(), {"p0": 3}, {"p0": None}, "test")
    lake.append(EVENTS, second.table(), {"p1": 3}, {"p1": None}, "test")
    return lake


def test_reads_the_latest_catalog_and_the_events_in_time_order(tmp_path: Path) -> None:
    build(tmp_path)
    dataset = load_delta(tmp_path)
    assert sorted(dataset.items) == ["i1", "i3"]
    assert dataset.items["i1"].brand == "new" and dataset.items["i3"].in_stock  # ranked like every item
    # Ties on ts_ms in acceptance order (partition, offset); the retried e3 kept once.
    assert [e.event_id for e in dataset.events] == ["e0", "e3", "e4", "e2", "e1"]
    assert dataset.events[1].type == events_pb2.VIEW  # the first accepted copy
    assert any("1 repeated event ids dropped" in note for note in dataset.notes)
    assert dataset.provenance == {
        "format": "delta",
        "path": str(tmp_path),
        "events_version": "2",
        "items_version": "1",
        "users_version": "1",
    }


def test_recorded_versions_read_the_same_data_again(tmp_path: Path) -> None:
    lake = build(tmp_path)
    before = load_delta(tmp_path)
    more = EventRows()
    more.add(event("u2", events_pb2.VIEW, "i1", BASE_TS + 5, event_id="late"), 0, 3)
    lake.append(EVENTS, more.table(), {"p0": 4}, {"p0": 3}, "test")
    assert len(load_delta(tmp_path).events) == len(before.events) + 1
    versions = {name: int(before.provenance[f"{name}_version"]) for name in (EVENTS, ITEMS, USERS)}
    again = load_delta(tmp_path, versions)
    assert again.events == before.events and again.items == before.items
    assert again.provenance == before.provenance


def test_a_bad_event_names_its_source(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    rows = EventRows()
    rows.add(
        events_pb2.Event(event_id="x", type=events_pb2.VIEW, user_id="u1", ts_ms=BASE_TS), 2, 17
    )  # no item
    lake.append(EVENTS, rows.table(), {"p": 1}, {"p": None}, "test")
    with pytest.raises(DataFormatError, match="partition 2 offset 17"):
        load_delta(tmp_path)


def test_registered_as_a_format(tmp_path: Path) -> None:
    build(tmp_path)
    assert "delta" in FORMATS
    assert len(load("delta", tmp_path).events) == 5
    with pytest.raises(DataFormatError, match="not a Delta table"):
        load("delta", tmp_path / "missing")
