"""The embedded server's batch store: the journal appended to the Delta tables, exactly once across a crash."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from clients.client import AisleClient, ClientOptions
from feature_worker.lake.schema import EVENTS, ITEMS, USERS
from feature_worker.lake.writer import table_uri
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import users_pb2
from server.embedded.ingest import JOURNAL_APP_ID
from tests.server.test_restart import catalog, send, stream
from trainer.data.delta import load_delta

pytestmark = pytest.mark.integration  # real Delta tables


def lake_server(tmp_path: Path, **env: str) -> ServerProcess:
    return ServerProcess(tmp_path / "server", env={"AISLE_LAKE_DIR": str(tmp_path / "lake"), **env})


def event_ids(lake: Path) -> Counter[str | None]:
    table = DeltaTable(table_uri(lake, EVENTS))
    return Counter(table.to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist())


def test_killed_and_restarted_every_tracked_event_lands_once(tmp_path: Path) -> None:
    events = stream(n=3000)
    lake = tmp_path / "lake"
    server = lake_server(tmp_path, AISLE_SINK_BATCH_MAX="400", AISLE_SINK_FLUSH_S="600").start()
    try:
        with AisleClient(ClientOptions(target=server.target)) as client:
            client.upsert_items(catalog())
        send(server.target, events[:1700])
        server.kill()  # appended by 400 rows at most: at least the last 100 are only in the journal
        landed = sum(event_ids(lake).values())
        assert landed < 1700
        server.start()
        send(server.target, events[1700:])
        server.stop()  # SIGTERM: appends the rest
    finally:
        server.stop()
    assert event_ids(lake) == Counter(e.event_id for e in events)
    table = DeltaTable(table_uri(lake, EVENTS))
    journal = (tmp_path / "server" / "journal.bin").stat().st_size
    assert table.transaction_version(JOURNAL_APP_ID) == journal
    assert DeltaTable(table_uri(lake, ITEMS)).count() == len(catalog())


def test_catalog_and_user_changes_land_and_the_trainer_reads_them(tmp_path: Path) -> None:
    events = stream(n=500)
    server = lake_server(tmp_path).start()  # default flush: everything lands on the graceful stop
    try:
        with AisleClient(ClientOptions(target=server.target)) as client:
            client.upsert_items(catalog())
            client.delete_items(["i29"])
            client.upsert_user(users_pb2.User(user_id="u1", consent=users_pb2.Consent(analytics=True)))
        send(server.target, events)
        send(server.target, events[:100])  # a producer's retry: journaled (and landed) twice, folded once
    finally:
        server.stop()
    lake = tmp_path / "lake"
    assert sum(event_ids(lake).values()) == 600
    ops = DeltaTable(table_uri(lake, ITEMS)).to_pyarrow_table(columns=["op"])["op"].to_pylist()
    assert Counter(ops) == {"upsert": 30, "delete": 1}
    assert DeltaTable(table_uri(lake, USERS)).to_pyarrow_table()["consent_analytics"].to_pylist() == [True]
    dataset = load_delta(lake)
    assert [e.event_id for e in dataset.events] == [e.event_id for e in sorted(events, key=lambda e: e.ts_ms)]
    assert sorted(dataset.items) == sorted(i.item_id for i in catalog() if i.item_id != "i29")
    assert dataset.provenance["events_version"] == str(DeltaTable(table_uri(lake, EVENTS)).version())


def test_a_new_journal_on_an_old_lake_is_appended_from_its_start(tmp_path: Path) -> None:
    events = stream(n=600)
    server = lake_server(tmp_path).start()
    try:
        send(server.target, events[:400])
    finally:
        server.stop()
    (tmp_path / "server" / "journal.bin").unlink()  # the data dir is reset; the lake stays
    server.start()
    try:
        send(server.target, events[400:])
    finally:
        server.stop()
    assert event_ids(tmp_path / "lake") == Counter(e.event_id for e in events)
    assert "appending the journal from there" in server.log_tail(100)
