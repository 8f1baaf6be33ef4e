"""The batch sink against a real broker: every record lands in the lake exactly once, crash or not.

Each test runs a sink process of its own on topics, a consumer group and a lake directory of its own,
produces straight into Kafka, and reads the Delta tables back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Self

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from deltalake import DeltaTable

from feature_worker.lake.schema import EVENTS, ITEMS, USERS
from feature_worker.lake.sink import CONSUMER, app_id
from feature_worker.lake.writer import table_uri
from feature_worker.topics import Topics, create_topics
from loadtest.harness.worker import sink_process
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from tests.feature_worker.test_worker import stream
from tests.shop import BASE_TS, event, item

pytestmark = pytest.mark.integration


class SinkRig:
    """Topics, a sink group, a lake and a sink process of one test."""

    def __init__(self, workdir: Path, bootstrap: str, **env: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.bootstrap = bootstrap
        self.topics = Topics(f"s{tag}")
        self.group = f"sink-{tag}"
        self.lake = workdir / "lake"
        self.sink = sink_process(
            workdir / "sink",
            env={
                "AISLE_KAFKA_BOOTSTRAP": bootstrap,
                "AISLE_TOPIC_PREFIX": self.topics.prefix,
                "AISLE_SINK_GROUP_ID": self.group,
                "AISLE_LAKE_DIR": str(self.lake),
                # Clear events from a producer of the test's own: no Redis, so no data keys (see test_privacy_kafka).
                "AISLE_ENCRYPTION": "off",
                **env,
            },
        )
        self.producer: AIOKafkaProducer | None = None
        self.probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)

    async def __aenter__(self) -> Self:
        await create_topics(self.bootstrap, self.topics.specs())
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=60_000
        )
        await self.producer.start()
        await self.probe.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.sink.stop)
        await self.probe.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def send(
        self, topic: str, records: list[tuple[bytes | None, bytes | None]], chunk: int = 1000
    ) -> None:
        assert self.producer is not None
        for start in range(0, len(records), chunk):
            futures = [
                await self.producer.send(topic, value, key=key)
                for key, value in records[start : start + chunk]
            ]
            await asyncio.gather(*futures)

    async def produce(self, events: list[events_pb2.Event]) -> None:
        await self.send(self.topics.events, [(e.user_id.encode(), e.SerializeToString()) for e in events])

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        count = self.topics.event_partitions if topic == self.topics.events else 1
        return dict(await self.probe.end_offsets([TopicPartition(topic, p) for p in range(count)]))

    def table(self, name: str) -> DeltaTable:
        return DeltaTable(table_uri(self.lake, name))

    def recorded(self, name: str, topic: str) -> dict[TopicPartition, int | None]:
        table = self.table(name)
        partitions = range(self.topics.event_partitions if topic == self.topics.events else 1)
        return {
            TopicPartition(topic, p): table.transaction_version(app_id(TopicPartition(topic, p)))
            for p in partitions
        }

    async def wait_recorded(self, name: str, topic: str, timeout_s: float = 120.0) -> None:
        """Until the lake records every offset the topic holds now."""
        ends = await self.end_offsets(topic)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            recorded = await asyncio.to_thread(self._recorded_or_empty, name, topic)
            if all((recorded.get(tp) or 0) >= end for tp, end in ends.items()):
                return
            if loop.time() > deadline or not self.sink.running():
                raise AssertionError(f"lake at {recorded}, topic at {ends}\n{self.sink.log_tail()}")
            await asyncio.sleep(0.2)

    def _recorded_or_empty(self, name: str, topic: str) -> dict[TopicPartition, int | None]:
        try:
            return self.recorded(name, topic)
        except Exception:  # noqa: BLE001 - the sink has not created the table yet
            return {}


def event_ids(table: DeltaTable) -> Counter[str | None]:
    return Counter(table.to_pyarrow_table(columns=["event_id"])["event_id"].to_pylist())


async def test_killed_mid_stream_every_event_lands_exactly_once(tmp_path: Path, kafka_bootstrap: str) -> None:
    events = stream("k", 20_000, users=500)
    async with SinkRig(
        tmp_path, kafka_bootstrap, AISLE_SINK_BATCH_MAX="1500", AISLE_SINK_FLUSH_S="0.5"
    ) as rig:
        await rig.produce(events[:12_000])
        await asyncio.to_thread(rig.sink.start)
        producing = asyncio.create_task(rig.produce(events[12_000:]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while (await asyncio.to_thread(rig.table(EVENTS).version)) < 4:  # a few appends in
            assert loop.time() < deadline, rig.sink.log_tail()
            await asyncio.sleep(0.05)
        rig.sink.kill()
        landed = rig.table(EVENTS).count()
        assert 0 < landed < len(events)
        await producing
        # The sink trusts the lake, not Kafka's committed offsets: restart it under a new group, for which
        # Kafka has none (it would read every partition from the beginning), as after a crash between the
        # Delta commit and the Kafka commit (Kafka behind the lake).
        rig.sink.env["AISLE_SINK_GROUP_ID"] = f"{rig.group}-new"
        await asyncio.to_thread(rig.sink.start)
        await rig.wait_recorded(EVENTS, rig.topics.events)
        assert event_ids(rig.table(EVENTS)) == Counter(e.event_id for e in events)
        # Each row says where it came from, and no Kafka record is in the table twice.
        sources = rig.table(EVENTS).to_pyarrow_table(columns=["source_partition", "source_offset"])
        pairs = list(
            zip(sources["source_partition"].to_pylist(), sources["source_offset"].to_pylist(), strict=True)
        )
        assert len(set(pairs)) == len(events)


async def test_item_and_user_changes_land_in_their_change_logs(tmp_path: Path, kafka_bootstrap: str) -> None:
    async with SinkRig(tmp_path, kafka_bootstrap, AISLE_SINK_FLUSH_S="0.2") as rig:
        await asyncio.to_thread(rig.sink.start)
        items = [item("i1", brand="acme"), item("i2", price=3.5), item("i1", brand="other")]
        await rig.send(rig.topics.items, [(i.item_id.encode(), i.SerializeToString()) for i in items])
        await rig.send(rig.topics.items, [(b"i2", None)])  # a tombstone deletes
        await rig.send(
            rig.topics.users,
            [
                (
                    b"u1",
                    users_pb2.User(
                        user_id="u1", consent=users_pb2.Consent(personalization=True)
                    ).SerializeToString(),
                ),
                (b"u2", b'{"user_id": "u2", "attributes": {"tier": "gold"}}'),  # the JSON form
                (b"u1", None),
            ],
        )
        await rig.wait_recorded(ITEMS, rig.topics.items)
        await rig.wait_recorded(USERS, rig.topics.users)
        got = rig.table(ITEMS).to_pyarrow_table().sort_by("source_offset").to_pylist()
        assert [(r["op"], r["item_id"], r["brand"]) for r in got] == [
            ("upsert", "i1", "acme"),
            ("upsert", "i2", "acme"),
            ("upsert", "i1", "other"),
            ("delete", "i2", None),
        ]
        assert catalog_pb2.Item.FromString(got[1]["raw"]).price == 3.5
        got = rig.table(USERS).to_pyarrow_table().sort_by("source_offset").to_pylist()
        assert [(r["op"], r["user_id"], r["consent_personalization"]) for r in got] == [
            ("upsert", "u1", True),
            ("upsert", "u2", None),
            ("delete", "u1", None),
        ]
        assert dict(got[1]["attributes"]) == {"tier": "gold"}


async def test_malformed_records_go_to_the_dlq_and_good_ones_land(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    good = [event("u1", events_pb2.VIEW, "i1", BASE_TS + i, event_id=f"good{i}") for i in range(5)]
    async with SinkRig(tmp_path, kafka_bootstrap, AISLE_SINK_FLUSH_S="0.2") as rig:
        await asyncio.to_thread(rig.sink.start)
        await rig.send(
            rig.topics.events,
            [
                (b"u1", good[0].SerializeToString()),
                (b"u1", b"\xff\xfe not protobuf"),
                (b"u1", good[1].SerializeToString()),
                (b"u2", good[2].SerializeToString()),  # keyed by another user
                (b"u1", None),
                (b"u1", events_pb2.Event(event_id="x", user_id="u1").SerializeToString()),  # no type
                *[(b"u1", e.SerializeToString()) for e in good[3:]],
            ],
        )
        await rig.send(rig.topics.items, [(b"bad", b"{not json"), (b"i9", item("i9").SerializeToString())])
        await rig.wait_recorded(EVENTS, rig.topics.events)
        await rig.wait_recorded(ITEMS, rig.topics.items)
        assert event_ids(rig.table(EVENTS)) == Counter(e.event_id for e in good if e is not good[2])
        assert rig.table(ITEMS).to_pyarrow_table()["item_id"].to_pylist() == ["i9"]
        consumer = AIOKafkaConsumer(
            rig.topics.dlq, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            dead: list[ConsumerRecord[bytes, bytes]] = []
            async with asyncio.timeout(30):
                while len(dead) < 5:
                    batch = await consumer.getmany(timeout_ms=500)
                    dead += [r for rs in batch.values() for r in rs]
        finally:
            await consumer.stop()
        headers = [dict(r.headers) for r in dead]
        assert all(h[CONSUMER] == rig.group.encode() for h in headers)
        assert sorted(h["aisle.dlq.topic"].decode() for h in headers) == sorted(
            [rig.topics.events] * 4 + [rig.topics.items]
        )


async def test_sigterm_appends_what_is_buffered(tmp_path: Path, kafka_bootstrap: str) -> None:
    events = stream("t", 300)
    async with SinkRig(tmp_path, kafka_bootstrap, AISLE_SINK_FLUSH_S="600") as rig:
        await asyncio.to_thread(rig.sink.start)
        await rig.produce(events)
        await asyncio.sleep(2)  # fetched, but far from a flush
        assert rig.table(EVENTS).count() == 0
        await asyncio.to_thread(rig.sink.stop)
        assert rig.sink.proc is not None and rig.sink.proc.returncode == 0, rig.sink.log_tail()
        assert event_ids(rig.table(EVENTS)) == Counter(e.event_id for e in events)
        assert all(v is not None for v in rig.recorded(EVENTS, rig.topics.events).values())


async def test_two_sinks_share_the_partitions_across_rebalances(tmp_path: Path, kafka_bootstrap: str) -> None:
    events = stream("r", 9_000, users=300)
    async with SinkRig(
        tmp_path, kafka_bootstrap, AISLE_SINK_BATCH_MAX="500", AISLE_SINK_FLUSH_S="0.3"
    ) as rig:
        second = sink_process(tmp_path / "sink2", env=dict(rig.sink.env))
        try:
            await asyncio.to_thread(rig.sink.start)
            await rig.produce(events[:3000])
            await asyncio.to_thread(second.start)  # a rebalance: partitions move while batches are buffered
            await rig.produce(events[3000:6000])
            await asyncio.to_thread(rig.sink.stop)  # leaves the group: its partitions move to the second
            await rig.produce(events[6000:])
            rig.sink = second  # wait_recorded watches the one still running
            await rig.wait_recorded(EVENTS, rig.topics.events)
        finally:
            await asyncio.to_thread(second.stop)
        assert event_ids(rig.table(EVENTS)) == Counter(e.event_id for e in events)
        assert "partition" in second.log_tail(200)
