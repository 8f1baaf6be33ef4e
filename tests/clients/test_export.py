"""`python -m clients export --segment ...` (SegmentService.ExportRecommendations) against a real server.

Each exported list is compared with Recommend's answer for the same customer and state, so the export is
"Recommend for everyone in the segment": the same items, the same consent rules.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.__main__ import main
from clients.client import AisleClient, ClientOptions
from clients.export import SegmentSyntaxError, parse_segment, stream
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import events_pb2, segments_pb2, users_pb2
from tests.shop import BASE_TS, Shop, event, item, unique, view
from tests.statuses import field_violations


@pytest.fixture(scope="module")
def export_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own: an export walks every customer the server has a record of."""
    process = ServerProcess(tmp_path_factory.mktemp("export-server")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def aisle(export_server: ServerProcess) -> Iterator[AisleClient]:
    with AisleClient(ClientOptions(target=export_server.target, read_timeout_s=10)) as client:
        yield client


class People:
    """gold readers g0..g2 (books; g2 bought one), a silver shoe fan, a gold customer who said no to
    personalization, and a gold customer without any events."""

    def __init__(self, aisle: AisleClient) -> None:
        self.shop = Shop()
        shop = self.shop
        aisle.upsert_items(
            [item(shop.id(f"b{n}"), category="books/novels", brand="pages") for n in range(6)]
            + [item(shop.id(f"s{n}"), category="shoes/running", brand="soles") for n in range(6)]
        )
        self.readers = [f"{shop.prefix}-g{n}" for n in range(3)]
        self.runner = f"{shop.prefix}-silver"
        self.refuser = f"{shop.prefix}-refuser"
        self.quiet = f"{shop.prefix}-quiet"
        consent = users_pb2.Consent(personalization=True, analytics=True)
        for user, tier in [
            *((r, "gold") for r in self.readers),
            (self.runner, "silver"),
            (self.quiet, "gold"),
        ]:
            aisle.upsert_user(users_pb2.User(user_id=user, attributes={"tier": tier}, consent=consent))
        aisle.upsert_user(
            users_pb2.User(
                user_id=self.refuser,
                attributes={"tier": "gold"},
                consent=users_pb2.Consent(personalization=False),
            )
        )
        events = []
        for n, user in enumerate(self.readers):
            events += [
                view(user, shop.id(f"b{n}"), ts_ms=BASE_TS + n),
                view(user, shop.id(f"b{n + 1}"), ts_ms=BASE_TS + 10 + n),
            ]
        events.append(
            event(self.readers[2], events_pb2.PURCHASE, shop.id("b3"), ts_ms=BASE_TS + 100, price=9.0)
        )
        events += [view(self.runner, shop.id(f"s{n}"), ts_ms=BASE_TS + n) for n in range(3)]
        events += [view(self.refuser, shop.id("b0"), ts_ms=BASE_TS)]
        assert aisle.track(events).accepted == len(events)


@pytest.fixture(scope="module")
def people(aisle: AisleClient) -> People:
    return People(aisle)


def exported(
    export_server: ServerProcess, capsys: pytest.CaptureFixture[str], *args: str
) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["--target", export_server.target, "export", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_an_attribute_segment_exports_recommend_for_each_customer(
    export_server: ServerProcess, aisle: AisleClient, people: People, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = exported(export_server, capsys, "--segment", "tier=gold", "--k", "4", "--format", "jsonl")
    mine = [r for r in rows if str(r["user_id"]).startswith(people.shop.prefix)]
    assert [r["user_id"] for r in mine] == sorted([*people.readers, people.refuser, people.quiet])
    for row in mine:
        expected = aisle.recommend(str(row["user_id"]), k=4)
        assert [i["item_id"] for i in row["items"]] == [i.item_id for i in expected.items]
        assert row["recommendation_id"]
        assert row["personalized"] is (row["user_id"] != people.refuser)


def test_activity_segments(
    export_server: ServerProcess, people: People, capsys: pytest.CaptureFixture[str]
) -> None:
    def users(*terms: str) -> list[str]:
        args = [a for term in terms for a in ("--segment", term)]
        return [
            str(r["user_id"])
            for r in exported(export_server, capsys, *args)
            if str(r["user_id"]).startswith(people.shop.prefix)
        ]

    assert users("category:books") == sorted([*people.readers, people.refuser])
    assert users("category:books", "tier=gold", "buyers") == [people.readers[2]]
    assert users("category:shoes/running") == [people.runner]
    assert users("min_events:3", "tier=gold") == [people.readers[2]]
    assert users("active_days:30", "tier=silver") == [people.runner]
    assert people.quiet not in users("active_days:3650")


def test_consent_decides_personalization_and_can_leave_customers_out(
    export_server: ServerProcess, aisle: AisleClient, people: People, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {r["user_id"]: r for r in exported(export_server, capsys, "--segment", "tier=gold", "--k", "4")}
    refused = rows[people.refuser]
    stranger = aisle.recommend(unique("stranger"), k=4)  # what a customer without personalization gets
    assert [i["item_id"] for i in refused["items"]] == [i.item_id for i in stranger.items]
    consented = exported(export_server, capsys, "--segment", "tier=gold", "--consented-only")
    assert people.refuser not in {r["user_id"] for r in consented}
    assert set(people.readers) <= {r["user_id"] for r in consented}


def test_csv_has_one_row_per_customer(
    export_server: ServerProcess, people: People, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gold.csv"
    assert (
        main(
            [
                "--target",
                export_server.target,
                "export",
                "--segment",
                "tier=silver",
                "--k",
                "3",
                "--format",
                "csv",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["user_id", "recommendation_id", "personalized", "item_1", "item_2", "item_3"]
    runner = next(r for r in rows[1:] if r[0] == people.runner)
    assert runner[2] == "true" and all(runner[3:])
    assert "customers/s" in capsys.readouterr().err


def test_the_stream_reports_progress_and_ends_with_a_complete_message(
    aisle: AisleClient, people: People
) -> None:
    chunks = list(stream(aisle, segments_pb2.ExportRecommendationsRequest(k=2)))
    assert chunks[-1].scanned == chunks[-1].total >= 6
    assert sum(len(c.customers) for c in chunks) == chunks[-1].total
    nobody = list(
        stream(
            aisle,
            segments_pb2.ExportRecommendationsRequest(
                segment=segments_pb2.Segment(attributes={"tier": "platinum"})
            ),
        )
    )
    assert len(nobody) == 1 and not nobody[0].customers


def test_bad_requests_are_invalid_argument_with_field_details(
    aisle: AisleClient, export_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    request = segments_pb2.ExportRecommendationsRequest(
        k=500, segment=segments_pb2.Segment(active_within_days=-1, attributes={"": "x"})
    )
    with pytest.raises(grpc.RpcError) as raised:
        list(stream(aisle, request))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(raised.value)) == {
        "k",
        "segment.active_within_days",
        "segment.attributes['']",
    }

    assert main(["--target", export_server.target, "export", "--segment", "tier=gold", "--k", "500"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


@pytest.mark.parametrize("term", ["what", "active_days:soon", "=x", "min_events:-1"])
def test_segment_syntax_errors(term: str) -> None:
    with pytest.raises(SegmentSyntaxError):
        parse_segment([term])
