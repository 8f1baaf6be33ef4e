"""The development services work: Kafka produces and consumes, Redis stores, and both survive a restart."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from feature_worker.topics import AISLE_TOPICS
from loadtest.harness.services.kafka import ExternalKafka, KafkaService
from loadtest.harness.services.redis import ExternalRedis, RedisService

pytestmark = pytest.mark.integration


async def _round_trip(bootstrap: str, topic: str) -> bytes:
    """Produce one message with a fresh key and consume it back from the earliest offset of a fresh group."""
    key = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{key.decode()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while True:
            message = await consumer.getone()
            if message.key == key:
                assert (message.partition, message.offset) == (sent.partition, sent.offset)
                await consumer.commit()
                return bytes(message.value or b"")
    finally:
        await consumer.stop()


async def test_kafka_round_trip(kafka_bootstrap: str) -> None:
    assert await _round_trip(kafka_bootstrap, "aisle.events") == b"hello"


async def test_kafka_has_the_aisle_topics(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([s.name for s in AISLE_TOPICS])}
    finally:
        await admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {
        s.name: s.partitions for s in AISLE_TOPICS
    }


def test_the_redis_cluster_has_three_primaries_serving_every_slot(redis_cluster_url: str) -> None:
    with redis.RedisCluster.from_url(redis_cluster_url) as cluster:
        assert len(cluster.get_primaries()) == 3
        names = [f"test:{uuid.uuid4().hex}:{n}" for n in range(60)]  # keys of many slots, so of every node
        assert len({cluster.get_node_from_key(name).name for name in names}) == 3
        for name in names:
            cluster.set(name, name, ex=60)
        assert [cluster.get(name) for name in names] == [name.encode() for name in names]


def test_redis_set_get(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        key = f"test:{uuid.uuid4().hex}"
        client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"


async def test_kafka_restart_keeps_data_and_port(kafka_service: KafkaService | ExternalKafka) -> None:
    if not kafka_service.managed:
        pytest.skip("Kafka comes from AISLE_KAFKA_BOOTSTRAP and cannot be restarted here")
    bootstrap = kafka_service.bootstrap
    assert await _round_trip(bootstrap, "aisle.dlq") == b"hello"
    # Blocking the event loop during the restart is fine here: nothing else runs on it.
    kafka_service.restart()
    assert kafka_service.bootstrap == bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # After a restart the group coordinator loads `__consumer_offsets` for a moment: ListGroups then
        # fails with GroupLoadInProgress, or lists only what is loaded so far. Ask until the groups are back.
        async with asyncio.timeout(30):
            while True:
                try:
                    if any(group[0].startswith("test-") for group in await admin.list_consumer_groups()):
                        break
                except KafkaError:
                    pass
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    assert await _round_trip(bootstrap, "aisle.dlq") == b"hello"


def test_redis_restart_comes_back_empty_on_the_same_port(redis_service: RedisService | ExternalRedis) -> None:
    if not redis_service.managed:
        pytest.skip("Redis comes from AISLE_REDIS_URL and cannot be restarted here")
    url = redis_service.url
    with redis.Redis.from_url(url) as client:
        client.set("test:restart", b"1")
    redis_service.restart()
    assert redis_service.url == url
    with redis.Redis.from_url(url) as client:
        assert client.get("test:restart") is None  # persistence is off
        assert client.ping()
