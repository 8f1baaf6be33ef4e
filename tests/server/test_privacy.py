"""Customers' rights over a real channel, in both modes: export, erasure with its receipt, the audit log,
bad ids; and, embedded, that an erased customer stays erased across a restart, that data is sealed on disk,
and that analytics consent keeps events out of the batch store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from deltalake import DeltaTable

from clients.client import AisleClient, ClientOptions
from feature_worker.lake.erasures import ERASURES
from feature_worker.lake.maintenance import optimize
from feature_worker.lake.schema import EVENTS, USERS
from feature_worker.lake.writer import Lake, table_uri
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from tests.modes import SERVER_MODES
from tests.shop import BASE_TS, Shop, item, unique, view
from tests.statuses import refusal_of

MIN = 60_000


def seed(
    client: AisleClient, analytics: bool = True
) -> tuple[str, list[catalog_pb2.Item], list[events_pb2.Event]]:
    """A customer with a record, six items and four views of their own; returns (user id, items, events)."""
    shop = Shop()
    items = [item(shop.id(f"i{n}"), category=shop.category(f"c{n % 2}")) for n in range(6)]
    client.upsert_items(items)
    user_id = unique("cust")
    client.upsert_user(
        users_pb2.User(
            user_id=user_id,
            attributes={"tier": f"gold-{user_id}"},
            consent=users_pb2.Consent(personalization=True, analytics=analytics),
        )
    )
    events = [view(user_id, items[n].item_id, BASE_TS + n * MIN) for n in range(4)]
    client.track(events)
    return user_id, items, events


def stranger_answer(client: AisleClient) -> list[str]:
    return [i.item_id for i in client.recommend(unique("stranger"), k=20).items]


def audit_entries(server: ServerProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in (server.data_dir / "audit.log").read_text().splitlines()]


class TestBothModes:
    pytestmark = pytest.mark.parametrize("server_mode", SERVER_MODES, indirect=True)

    def test_export_holds_the_record_the_profile_and_the_events(
        self, client: AisleClient, server: ServerProcess
    ) -> None:
        user_id, items, events = seed(client)
        exported = client.export_user(user_id)
        document = json.loads(exported.json)
        assert document["format"] == "aisle.export/1" and document["user_id"] == user_id
        assert document["user"]["attributes"] == {"tier": f"gold-{user_id}"}
        assert document["user"]["consent"] == {"personalization": True, "analytics": True}
        assert [e["event_id"] for e in document["events"]] == [e.event_id for e in events]
        assert {e["item_id"] for e in document["events"]} == {i.item_id for i in items[:4]}
        assert document["profile"]["known"] is True
        assert [r["item_id"] for r in document["profile"]["recent"]] == [
            i.item_id for i in reversed(items[:4])
        ]
        entry = audit_entries(server)[-1]
        assert (entry["method"], entry["subject"], entry["outcome"], entry["who"]) == (
            "ExportUser",
            user_id,
            "OK",
            "anonymous",
        )
        assert entry["peer"] and entry["ts_ms"]

    def test_erasure_removes_the_customer_from_everything_the_server_reads(
        self, client: AisleClient, server: ServerProcess
    ) -> None:
        user_id, items, _ = seed(client)
        other, _, other_events = seed(client)
        assert client.profile(user_id).known
        personal = [i.item_id for i in client.recommend(user_id, k=20).items]
        assert personal != stranger_answer(client)  # their history shaped the answer
        receipt = client.erase_user(user_id)
        actions = {step.store: step.action for step in receipt.steps}
        assert receipt.held and receipt.user_id == user_id and receipt.receipt_id and receipt.erased_at_ms
        assert (
            actions["keys"] == "destroyed"
            and actions["users"] == "deleted"
            and actions["features"] == "deleted"
        )
        assert actions.get("journal", actions.get("users_topic")) in ("marked", "tombstoned")
        assert actions["lake"] == "not_configured"
        # Gone from every read, at once.
        profile = client.profile(user_id)
        assert not profile.known and not profile.recent and not profile.user.attributes
        assert [i.item_id for i in client.recommend(user_id, k=20).items] == stranger_answer(client)
        document = json.loads(client.export_user(user_id).json)
        assert document["user"] is None and document["events"] == [] and document["profile"]["known"] is False
        # The other customer is untouched.
        assert client.profile(other).events_applied == len(other_events)
        again = client.erase_user(user_id)
        assert not again.held and {s.store: s.action for s in again.steps}["keys"] == "nothing_held"
        entries = [e for e in audit_entries(server) if e["subject"] == user_id]
        assert [(e["method"], e["outcome"]) for e in entries] == [
            ("EraseUser", "OK"),
            ("ExportUser", "OK"),
            ("EraseUser", "OK"),
        ]
        assert entries[0]["receipt_id"] == receipt.receipt_id
        log = (server.data_dir / "audit.log").read_text()
        assert f"gold-{user_id}" not in log and items[0].item_id not in log  # never the data

    def test_bad_ids_are_invalid_argument_with_the_field_and_audited(
        self, client: AisleClient, server: ServerProcess
    ) -> None:
        for bad in ("", "x" * 129, "a\nb"):
            for call in (client.erase_user, client.export_user):
                code, fields = refusal_of(call, bad)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["user_id"], (bad, call)
        outcomes = [e["outcome"] for e in audit_entries(server)[-6:]]
        assert outcomes == ["INVALID_ARGUMENT"] * 6


def test_an_erased_customer_does_not_come_back_after_a_restart(fresh_server: ServerProcess) -> None:
    server = fresh_server
    with AisleClient(ClientOptions(target=server.target)) as client:
        user_id, items, events = seed(client)
        other, _, other_events = seed(client)
        journal = (server.data_dir / "journal.bin").read_bytes()
        for e in [*events, *other_events]:  # sealed on disk: no event id, no attribute in clear
            assert e.event_id.encode() not in journal
        assert f"gold-{user_id}".encode() not in journal
        other_profile = client.profile(other)
        client.erase_user(user_id)
    assert user_id not in (server.data_dir / "keys.txt").read_text()
    assert other in (server.data_dir / "keys.txt").read_text()
    server.restart()
    with AisleClient(ClientOptions(target=server.target)) as client:
        assert not client.profile(user_id).known
        assert [i.item_id for i in client.recommend(user_id, k=20).items] == stranger_answer(client)
        document = json.loads(client.export_user(user_id).json)
        assert document["user"] is None and document["events"] == []
        profile = client.profile(other)
        assert profile.recent == other_profile.recent and profile.user == other_profile.user
        assert len(json.loads(client.export_user(other).json)["events"]) == len(other_events)
        # Back as a new customer: a new key, and only what they send from now on.
        client.track([view(user_id, items[5].item_id, BASE_TS + 10 * MIN)])
    server.restart()
    with AisleClient(ClientOptions(target=server.target)) as client:
        assert [r.item_id for r in client.profile(user_id).recent] == [items[5].item_id]


def test_encryption_on_without_a_master_key_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="AISLE_MASTER_KEY_FILE is not set"):
        ServerProcess(tmp_path / "on", env={"AISLE_ENCRYPTION": "on"}).start(timeout_s=30)


def test_encryption_off_stores_in_clear_and_still_erases(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "off", env={"AISLE_ENCRYPTION": "off"}).start()
    try:
        assert "ENCRYPTION OFF" in server.log_tail(100)
        with AisleClient(ClientOptions(target=server.target)) as client:
            user_id, _, events = seed(client)
            assert events[0].event_id.encode() in (server.data_dir / "journal.bin").read_bytes()
            receipt = client.erase_user(user_id)
            assert "keys" not in {s.store for s in receipt.steps}
        server.restart()
        with AisleClient(ClientOptions(target=server.target)) as client:
            assert not client.profile(user_id).known  # the journal's erasure record is honoured at replay
    finally:
        server.stop()


@pytest.mark.integration  # real Delta tables
def test_analytics_consent_keeps_events_out_of_the_lake_and_erasure_reaches_it(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    server = ServerProcess(tmp_path / "server", env={"AISLE_LAKE_DIR": str(lake)}).start()
    try:
        with AisleClient(ClientOptions(target=server.target)) as client:
            withheld, _, _ = seed(client, analytics=False)
            kept, _, kept_events = seed(client)
            assert client.profile(withheld).known  # personalization consent still holds
            no_record = unique("anon")
            client.track([view(no_record, "any-item", BASE_TS)])
        server.stop()  # appends everything journaled
        users = set(
            DeltaTable(table_uri(lake, EVENTS)).to_pyarrow_table(columns=["user_id"])["user_id"].to_pylist()
        )
        assert users == {kept, no_record}
        server.start()
        with AisleClient(ClientOptions(target=server.target)) as client:
            assert {s.store: s.action for s in client.erase_user(kept).steps}["lake"] == "scheduled"
        server.stop()
    finally:
        server.stop()

    def rows(table: str, user: str) -> int:
        found: int = (
            DeltaTable(table_uri(lake, table))
            .to_pyarrow_table(filters=[("user_id", "=", user)], columns=["user_id"])
            .num_rows
        )
        return found

    assert rows(EVENTS, kept) == len(kept_events)  # until the next maintenance
    report = optimize(Lake(lake), retention_hours=0)
    assert report["erasures"]["customers"] == 1
    assert rows(EVENTS, kept) == 0 and rows(USERS, kept) == 0 and rows(EVENTS, no_record) == 1
    assert DeltaTable(table_uri(lake, ERASURES)).count() == 0


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server").start()
    yield process
    process.stop()


def test_the_command_line_exports_and_erases(
    fresh_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    from clients.__main__ import main

    with AisleClient(ClientOptions(target=fresh_server.target)) as client:
        user_id, _, events = seed(client)
    assert main(["--target", fresh_server.target, "export", "--user", user_id]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == len(events)
    assert main(["--target", fresh_server.target, "erase", "--user", user_id]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["userId"] == user_id and receipt["held"] is True
    assert main(["--target", fresh_server.target, "erase", "--user", ""]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
