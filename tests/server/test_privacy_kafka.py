"""Erasure in Kafka + Redis mode against a real broker and Redis: the customer is gone from Redis and from every
read at once, their events on the topic are sealed, and replaying the whole event topic into Redis with a new
consumer group does not bring them back (their key is destroyed); a batch sink honours analytics consent."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from deltalake import DeltaTable

from clients.client import ClientOptions
from feature_worker.lag import LagProbe
from feature_worker.lake.schema import EVENTS
from feature_worker.lake.writer import table_uri
from feature_worker.privacy.sealing import is_sealed
from loadtest.harness.worker import WorkerProcess, sink_process
from tests.kafka_stack import AppliedClient, KafkaStack, LoopThread
from tests.server.test_privacy import seed, stranger_answer

pytestmark = pytest.mark.integration


async def keys_of(redis_url: str, user_id: str) -> list[str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [k.decode() async for k in client.scan_iter(match=f"*{{{user_id}}}*", count=1000)]
    finally:
        await client.aclose()


async def flush(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def topic_records(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out: list[tuple[bytes, bytes]] = []
        batch = await consumer.getmany(timeout_ms=3000)
        while batch:
            out += [(r.key, r.value) for records in batch.values() for r in records]
            batch = await consumer.getmany(timeout_ms=1000)
        return out
    finally:
        await consumer.stop()


async def replay_caught_up(bootstrap: str, group: str, topic: str) -> None:
    probe = LagProbe(bootstrap, group, topic)
    await probe.start()
    try:
        await probe.wait_caught_up(120)
    finally:
        await probe.close()


def test_erasure_holds_against_a_replay_of_the_event_topic(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/7"
    loop = LoopThread()
    loop.run(flush(url))
    stack = KafkaStack(tmp_path / "stack", kafka_bootstrap, url).start()
    replayer: WorkerProcess | None = None
    try:
        with AppliedClient(ClientOptions(target=stack.server.target, write_timeout_s=30), stack) as client:
            user_id, items, events = seed(client)
            other, _, other_events = seed(client)
            # On the topic, the customer's events are sealed: no event id or item id in clear.
            records = loop.run(topic_records(kafka_bootstrap, stack.topics.events))
            theirs = [value for key, value in records if key == user_id.encode()]
            assert len(theirs) == len(events) and all(is_sealed(v) for v in theirs)
            assert not any(
                e.event_id.encode() in v or items[0].item_id.encode() in v for v in theirs for e in events
            )
            # So is their record (attributes, consent) on the users topic.
            users_topic = [
                v
                for k, v in loop.run(topic_records(kafka_bootstrap, stack.topics.users))
                if k == user_id.encode()
            ]
            assert len(users_topic) == 1 and is_sealed(users_topic[0]) and b"gold-" not in users_topic[0]
            # In Redis, their features are sealed too.
            assert sorted(loop.run(keys_of(url, user_id))) == sorted(
                [f"u1{{{user_id}}}", f"d1{{{user_id}}}", f"x1{{{user_id}}}"]
            )
            other_before = client.profile(other)

            receipt = client.erase_user(user_id)
            assert {s.store: s.action for s in receipt.steps} == {
                "keys": "destroyed",
                "users_topic": "tombstoned",
                "users": "deleted",
                "features": "deleted",
                "lake": "not_configured",
            }
            assert loop.run(keys_of(url, user_id)) == []
            assert not client.profile(user_id).known
            assert [i.item_id for i in client.recommend(user_id, k=20).items] == stranger_answer(client)
            tail = [
                v
                for k, v in loop.run(topic_records(kafka_bootstrap, stack.topics.users))
                if k == user_id.encode()
            ]
            assert tail[-1] is None  # the tombstone
            exported = json.loads(client.export_user(user_id).json)
            assert exported["user"] is None and exported["events"] == []
            assert len(json.loads(client.export_user(other).json)["events"]) == len(other_events)

            # Replay the whole event topic into the same Redis with a new consumer group.
            group = f"replay-{uuid.uuid4().hex[:8]}"
            replayer = WorkerProcess(
                tmp_path / "replayer", env={**stack.env, "AISLE_GROUP_ID": group}
            ).start()
            loop.run(replay_caught_up(kafka_bootstrap, group, stack.topics.events), 150)
            assert loop.run(keys_of(url, user_id)) == []
            assert not client.profile(user_id).known
            assert [i.item_id for i in client.recommend(user_id, k=20).items] == stranger_answer(client)
            after = client.profile(other)  # replayed events of others are recognised as applied: no change
            assert after.recent == other_before.recent and after.events_applied == other_before.events_applied
    finally:
        if replayer is not None:
            replayer.stop()
        stack.stop()
        loop.close()


def test_the_sink_keeps_events_without_analytics_consent_out_of_the_lake(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/8"
    stack = KafkaStack(tmp_path / "stack", kafka_bootstrap, url).start()
    lake = tmp_path / "lake"
    group = f"sink-{uuid.uuid4().hex[:8]}"
    sink = sink_process(
        tmp_path / "sink",
        env={
            **stack.env,
            "AISLE_LAKE_DIR": str(lake),
            "AISLE_SINK_GROUP_ID": group,
            "AISLE_SINK_FLUSH_S": "0.2",
        },
    )
    try:
        with AppliedClient(ClientOptions(target=stack.server.target, write_timeout_s=30), stack) as client:
            withheld, _, _ = seed(client, analytics=False)
            kept, _, kept_events = seed(client)
            erased, _, _ = seed(client)
            client.erase_user(erased)  # before the sink ever reads: its sealed events cannot be opened
        sink.start()
        asyncio.run(replay_caught_up(kafka_bootstrap, group, stack.topics.events))
        sink.stop()  # SIGTERM: appends anything still buffered
    finally:
        sink.stop()
        stack.stop()
    users = DeltaTable(table_uri(lake, EVENTS)).to_pyarrow_table(columns=["user_id"])["user_id"].to_pylist()
    assert withheld not in users and erased not in users
    assert users.count(kept) == len(kept_events)
