"""Kafka mode: every answer's exposure lands once on `<prefix>.exposures` (a real broker), keyed by user."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from clients.client import AisleClient
from protos.aisle.v1 import experiments_pb2
from tests.kafka_stack import KafkaStack
from tests.shop import Shop, item

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server_mode", ["kafka"], indirect=True)]


async def read_exposures(
    bootstrap: str, topic: str, wanted: set[str], timeout_s: float = 60.0
) -> dict[str, list[tuple[bytes, experiments_pb2.Exposure]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: dict[str, list[tuple[bytes, experiments_pb2.Exposure]]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not wanted <= found.keys() and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    exposure = experiments_pb2.Exposure.FromString(record.value)
                    if exposure.recommendation_id in wanted:
                        found.setdefault(exposure.recommendation_id, []).append((record.key, exposure))
        await asyncio.sleep(1.0)  # anything logged twice would have arrived by now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                exposure = experiments_pb2.Exposure.FromString(record.value)
                if exposure.recommendation_id in wanted:
                    found.setdefault(exposure.recommendation_id, []).append((record.key, exposure))
    finally:
        await consumer.stop()
    return found


def test_answers_are_logged_to_the_exposure_topic(client: AisleClient, kafka_stack: KafkaStack) -> None:
    shop = Shop()
    client.upsert_items([item(shop.id(f"p{i}")) for i in range(5)])
    user = f"{shop.prefix}-u"
    answers = [client.recommend(user, 3) for _ in range(4)]
    wanted = {a.recommendation_id for a in answers}
    found = asyncio.run(
        read_exposures(kafka_stack.bootstrap, f"{kafka_stack.topics.prefix}.exposures", wanted)
    )
    assert found.keys() == wanted
    for answer in answers:
        [(key, exposure)] = found[answer.recommendation_id]  # exactly once
        assert key == user.encode()
        assert exposure.user_id == user and exposure.variant == answer.variant == "default"
        assert list(exposure.item_ids) == [i.item_id for i in answer.items]
        assert exposure.model_version == answer.model_version
