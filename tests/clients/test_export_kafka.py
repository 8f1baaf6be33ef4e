"""The segment export on the Kafka + Redis stack: records from the users topic, features from Redis."""

from __future__ import annotations

import pytest

from clients.client import ClientOptions
from clients.export import stream
from protos.aisle.v1 import segments_pb2, users_pb2
from tests.kafka_stack import AppliedClient, KafkaStack
from tests.polling import wait_for
from tests.shop import BASE_TS, Shop, item, unique, view

pytestmark = pytest.mark.integration


def test_export_reads_records_from_the_topic_and_activity_from_redis(kafka_stack: KafkaStack) -> None:
    shop = Shop()
    tier = unique("tier")  # a value no other test's customers have
    readers = [f"{shop.prefix}-r{n}" for n in range(3)]
    idle = f"{shop.prefix}-idle"
    options = ClientOptions(target=kafka_stack.server.target, read_timeout_s=10, write_timeout_s=30)
    with AppliedClient(options, kafka_stack) as client:
        client.upsert_items([item(shop.id(f"b{n}"), category=shop.category("books")) for n in range(5)])
        for user in [*readers, idle]:
            client.upsert_user(
                users_pb2.User(
                    user_id=user,
                    attributes={"tier": tier},
                    consent=users_pb2.Consent(personalization=True, analytics=True),
                )
            )
        client.track(
            [view(user, shop.id(f"b{n}"), ts_ms=BASE_TS + n) for n, user in enumerate(readers)]
            + [view(readers[0], shop.id("b4"), ts_ms=BASE_TS + 10)]
        )
        # The server learns the records from the users topic: wait until it holds all four.
        wait_for(
            lambda: all(client.profile(u).user.attributes.get("tier") == tier for u in [*readers, idle]),
            "the users topic to reach the server",
            interval_s=0.05,
        )

        def exported(segment: segments_pb2.Segment) -> dict[str, list[str]]:
            chunks = stream(client, segments_pb2.ExportRecommendationsRequest(segment=segment, k=3))
            return {
                row.user_id: [i.item_id for i in row.items] for chunk in chunks for row in chunk.customers
            }

        everyone = exported(segments_pb2.Segment(attributes={"tier": tier}))
        assert sorted(everyone) == sorted([*readers, idle])
        for user, items in everyone.items():
            assert items == [i.item_id for i in client.recommend(user, k=3).items]
        active = exported(segments_pb2.Segment(attributes={"tier": tier}, category=shop.category("books")))
        assert sorted(active) == sorted(readers)
        assert list(exported(segments_pb2.Segment(attributes={"tier": tier}, min_events=2))) == [readers[0]]
