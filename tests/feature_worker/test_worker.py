"""The Kafka feature worker against a real broker and a real Redis: crashes, restarts and bad messages.

Each test runs a worker process of its own on topics, a consumer group and a Redis database of its own,
produces straight into Kafka (as any producer may), and compares what Redis holds with what the
embedded fold reaches on the same events: no loss and no double count, whatever happened in between.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from feature_worker import keys
from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.lag import LagProbe
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.topics import Topics, create_topics
from loadtest.harness.services.kafka import ExternalKafka, KafkaService
from loadtest.harness.services.redis import RedisService, flush
from loadtest.harness.worker import WorkerProcess
from protos.aisle.v1 import catalog_pb2, events_pb2
from tests.kafka_stack import stack_env
from tests.sealing import sealed_store
from tests.shop import BASE_TS, event, item

pytestmark = pytest.mark.integration

TYPES = [events_pb2.VIEW] * 6 + [
    events_pb2.CLICK,
    events_pb2.ADD_TO_CART,
    events_pb2.REMOVE_FROM_CART,
    events_pb2.PURCHASE,
]


def stream(tag: str, n: int, users: int = 200, items: int = 60, seed: int = 11) -> list[events_pb2.Event]:
    """`n` events of `users` users over `items` items; timestamps mostly increase, some arrive late."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = BASE_TS + i * 5_000 - (rng.randrange(600_000) if rng.random() < 0.1 else 0)
        out.append(
            event(
                f"{tag}-u{rng.randrange(users)}",
                rng.choice(TYPES),
                f"{tag}-i{rng.randrange(items)}",
                ts,
                event_id=f"{tag}-e{i}",
                price=rng.choice([5.0, 12.5]),
                quantity=1,
            )
        )
    return out


def catalog_of(tag: str, items: int = 60) -> list[catalog_pb2.Item]:
    return [
        item(f"{tag}-i{n}", category=f"dept{n % 3}/cat{n % 6}", brand=f"brand{n % 4}") for n in range(items)
    ]


class Rig:
    """Topics, a group, a Redis database and a worker process of one test."""

    def __init__(self, workdir: Path, bootstrap: str, redis_url: str, **env: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.topics = Topics(f"w{tag}")
        self.group = f"g{tag}"
        self.worker = WorkerProcess(
            workdir / "worker", env=stack_env(bootstrap, redis_url, self.topics.prefix, self.group, **env)
        )
        self.probe = LagProbe(bootstrap, self.group, self.topics.events)
        self.producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Self:
        await create_topics(self.bootstrap, self.topics.specs())
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=60_000
        )
        await self.producer.start()
        await self.probe.start()
        await asyncio.to_thread(flush, self.redis_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.worker.stop)
        await self.probe.close()
        if self.producer is not None:
            await self.producer.stop()

    async def upsert_items(self, items: list[catalog_pb2.Item]) -> None:
        assert self.producer is not None
        futures = [
            await self.producer.send(self.topics.items, i.SerializeToString(), key=i.item_id.encode())
            for i in items
        ]
        await asyncio.gather(*futures)

    async def produce(self, events: list[events_pb2.Event], chunk: int = 500, pause_s: float = 0.0) -> None:
        """Every event, keyed by user, in chunks: each chunk acknowledged before the next is sent."""
        assert self.producer is not None
        for start in range(0, len(events), chunk):
            futures = [
                await self.producer.send(self.topics.events, e.SerializeToString(), key=e.user_id.encode())
                for e in events[start : start + chunk]
            ]
            await asyncio.gather(*futures)
            if pause_s:
                await asyncio.sleep(pause_s)

    async def produce_raw(self, records: list[tuple[bytes | None, bytes | None]]) -> None:
        assert self.producer is not None
        futures = [await self.producer.send(self.topics.events, value, key=key) for key, value in records]
        await asyncio.gather(*futures)

    async def start_worker(self) -> None:
        await asyncio.to_thread(self.worker.start)

    async def committed(self) -> int:
        return sum((await self.probe.committed()).values())

    async def wait_committed(self, at_least: int, timeout_s: float = 60.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (done := await self.committed()) < at_least:
            assert loop.time() < deadline, f"worker stuck at {done} committed:\n{self.worker.log_tail()}"
            await asyncio.sleep(0.01)
        return done

    async def wait_applied(self, timeout_s: float = 120.0) -> None:
        try:
            await self.probe.wait_caught_up(timeout_s)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.worker.log_tail()}") from exc


async def assert_redis_equals_embedded(
    redis_url: str, items: list[catalog_pb2.Item], events: list[events_pb2.Event]
) -> None:
    """Redis holds exactly the features that the embedded fold computes from `events`."""
    catalog = Catalog()
    catalog.upsert_many(items)
    expected = MemoryFeatureStore()
    for start in range(0, len(events), 700):  # batch boundaries do not matter
        await apply_events(expected, catalog, events[start : start + 700])
    store = sealed_store(redis_url)
    try:
        users = await store.load_users(list(expected.features.users))
        wrong = [u for u, state in expected.features.users.items() if users[u] != state]
        assert not wrong, (
            f"{len(wrong)} users differ, e.g. {wrong[0]}: {users[wrong[0]]} != {expected.features.users[wrong[0]]}"
        )
        assert sum(s.events_applied for s in users.values()) == len({(e.user_id, e.event_id) for e in events})
        stats, want = await store.item_stats(), expected.features.item_stats()
        assert stats.clock_ms == want.clock_ms
        assert stats.popularity.keys() == want.popularity.keys()
        for name, got, wanted in (
            ("popularity", stats.popularity, want.popularity),
            ("trending", stats.trending, want.trending),
        ):
            off = [i for i in wanted if not math.isclose(got.get(i, 0.0), wanted[i], rel_tol=1e-9)]
            assert not off, f"{name} of {off[:3]} differs"
        for item_id, neighbours in expected.features.covis.items():
            # A client without decode_responses answers ZRANGE WITHSCORES with (member bytes, score) pairs.
            raw = cast(
                list[tuple[bytes, float]],
                await store.client.zrange(keys.covis(item_id), 0, -1, withscores=True),
            )
            assert {k.decode(): v for k, v in raw} == neighbours, f"co-visitation of {item_id} differs"
    finally:
        await store.close()


async def run_with_disruption(
    rig: Rig, n: int, disrupt: Callable[[], Awaitable[None]], after: int, written_not_committed: int = 0
) -> tuple[list[catalog_pb2.Item], list[events_pb2.Event]]:
    """Produce `n` events while the worker folds them; `disrupt` once `after` of them are committed.

    With `written_not_committed`, the first that many events are in Redis before the worker starts, as a
    worker that died between its Redis write and its offset commit leaves them: they are redelivered.
    """
    items, events = catalog_of(rig.tag), stream(rig.tag, n)
    await rig.upsert_items(items)
    if written_not_committed:
        catalog = Catalog()
        catalog.upsert_many(items)
        store = sealed_store(rig.redis_url)
        try:
            batch = events[:written_not_committed]
            assert (await apply_events(store, catalog, batch)).applied == len(batch)
        finally:
            await store.close()
    await rig.start_worker()
    producing = asyncio.create_task(rig.produce(events, chunk=250, pause_s=0.005))
    done = await rig.wait_committed(after)
    assert done < n, "the worker finished before it could be disrupted"
    await disrupt()
    await producing
    await rig.wait_applied()
    return items, events


@pytest.fixture(params=["redis", "redis-cluster"])
def worker_redis_url(request: pytest.FixtureRequest) -> str:
    """A Redis database of the test's own (emptied by `Rig`): on the session's Redis, or its Redis Cluster."""
    if request.param == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    return str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + "/1"


async def test_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, kafka_bootstrap: str, worker_redis_url: str
) -> None:
    url = worker_redis_url
    async with Rig(tmp_path, kafka_bootstrap, url, AISLE_BATCH_MAX="500") as rig:

        async def crash_and_restart() -> None:
            await asyncio.to_thread(rig.worker.kill)
            await rig.start_worker()

        items, events = await run_with_disruption(
            rig, 20_000, crash_and_restart, after=4_000, written_not_committed=1_500
        )
        # Equal counts prove the 1,500 redelivered events were recognised, not folded twice.
        await assert_redis_equals_embedded(url, items, events)


async def test_broker_restart_mid_stream_loses_nothing(
    tmp_path: Path, kafka_service: KafkaService | ExternalKafka, redis_url: str
) -> None:
    if not kafka_service.managed:
        pytest.skip("Kafka comes from AISLE_KAFKA_BOOTSTRAP and cannot be restarted here")
    url = redis_url.rsplit("/", 1)[0] + "/2"
    async with Rig(tmp_path, kafka_service.bootstrap, url, AISLE_BATCH_MAX="500") as rig:
        items, events = await run_with_disruption(
            rig, 6_000, lambda: asyncio.to_thread(kafka_service.restart), after=1_000
        )
        await assert_redis_equals_embedded(url, items, events)


async def test_redis_restart_mid_stream_loses_nothing(tmp_path: Path, kafka_bootstrap: str) -> None:
    redis = RedisService(tmp_path / "redis", appendonly=True)  # Aisle's Redis runs with AOF
    await asyncio.to_thread(redis.start)
    try:
        async with Rig(tmp_path, kafka_bootstrap, redis.url, AISLE_BATCH_MAX="500") as rig:
            items, events = await run_with_disruption(
                rig, 6_000, lambda: asyncio.to_thread(redis.restart), after=1_000
            )
            await assert_redis_equals_embedded(redis.url, items, events)
    finally:
        await asyncio.to_thread(redis.stop)


async def read_dead_letters(
    bootstrap: str, topic: str, count: int
) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        out: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        async with asyncio.timeout(30):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [(r.key, r.value, dict(r.headers)) for r in records]
        return out
    finally:
        await consumer.stop()


async def test_malformed_messages_are_dead_lettered_and_the_good_ones_applied(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/3"
    async with Rig(tmp_path, kafka_bootstrap, url, AISLE_MAX_EVENT_BYTES="4096") as rig:
        user = f"{rig.tag}-u"
        good = [
            event(user, events_pb2.VIEW, f"{rig.tag}-i{i}", BASE_TS + i, event_id=f"{rig.tag}-g{i}")
            for i in range(4)
        ]
        as_json = json.dumps(
            {
                "event_id": f"{rig.tag}-json",
                "type": "CLICK",
                "user_id": user,
                "item_id": f"{rig.tag}-i9",
                "ts_ms": str(BASE_TS + 10),
            }
        ).encode()
        bad: list[tuple[bytes | None, bytes | None, str]] = [
            (user.encode(), b"\xff\xfe garbage \x00\x01", "value: not a protobuf Event"),
            (
                user.encode(),
                b'{"event_id": "x", "type": "VIEW", "user_id": "u", "ts_ms": "soon"}',
                "not a JSON Event",
            ),
            (user.encode(), b'{"event_id": 5, "type": []}', "not a JSON Event"),
            (
                user.encode(),
                catalog_pb2.Item(item_id="i1", title="a catalog item, not an event").SerializeToString(),
                "user_id: is required",
            ),
            (
                user.encode(),
                event(user, events_pb2.VIEW, "", BASE_TS).SerializeToString(),
                "item_id: is required",
            ),
            (
                user.encode(),
                event(user, events_pb2.VIEW, "x" * 5000, BASE_TS).SerializeToString(),
                "bytes; the limit is 4096 bytes",
            ),
            (
                b"someone-else",
                event(user, events_pb2.VIEW, "i1", BASE_TS).SerializeToString(),
                "key: must be",
            ),
            (user.encode(), None, "value: is empty"),
        ]
        records: list[tuple[bytes | None, bytes | None]] = [(user.encode(), good[0].SerializeToString())]
        for (key, value, _), ok in zip(bad, [*good[1:], None, None, None, None, None], strict=False):
            records.append((key, value))
            if ok is not None:
                records.append((user.encode(), ok.SerializeToString()))
        records.append((user.encode(), as_json))
        await rig.start_worker()
        await rig.produce_raw(records)
        await rig.wait_applied()

        store = sealed_store(url)
        try:
            state = (await store.load_users([user]))[user]
        finally:
            await store.close()
        assert state.events_applied == 5, rig.worker.log_tail()
        assert {item for _, _, item in state.recent} == {f"{rig.tag}-i{i}" for i in (0, 1, 2, 3, 9)}

        letters = await read_dead_letters(kafka_bootstrap, rig.topics.dlq, len(bad))
        assert len(letters) == len(bad)
        by_record = {
            (key, value): headers for key, value, headers in letters
        }  # a dead letter keeps the record
        for key, value, reason in bad:
            headers = by_record[(key, value)]
            assert reason in headers["aisle.dlq.reason"].decode(), headers["aisle.dlq.reason"]
            assert headers["aisle.dlq.topic"].decode() == rig.topics.events
            assert int(headers["aisle.dlq.offset"]) >= 0
