"""Kafka ingestion: produce accepted writes to the topics and answer once the broker acknowledged them.

- Events go to `<prefix>.events`, keyed by user id, one protobuf `Event` per record. They become
  visible to Recommend once a feature worker has folded them (milliseconds).
- Items and users go to the compacted `<prefix>.items` / `<prefix>.users` topics keyed by id (a delete
  is a tombstone). The call returns once this server's own catalog has applied the change
  (read-your-writes here; other servers and the workers follow within milliseconds).

With a `vault` (encryption on) every event is sealed with its customer's data key before it is produced
(`feature_worker.privacy.events`); the key comes from Redis in the same call that reads the users' applied
ids. An erasure tombstones the customer on the users topic (`delete_user`).

The producer is idempotent with `acks=all`: a retried send is never duplicated on the broker, and an
acknowledged record is on every in-sync replica. Broker trouble becomes `StoreUnavailable`
(UNAVAILABLE, which clients retry; events carry their idempotency key, so a retry is safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from feature_worker.catalog import Catalog
from feature_worker.codec import decode
from feature_worker.errors import InvalidArgument, StoreUnavailable
from feature_worker.fold import event_key
from feature_worker.privacy.events import EventOpener, seal_event, seal_user
from feature_worker.privacy.sealing import is_sealed
from feature_worker.privacy.vault import DataKey, Vault
from feature_worker.stores.base import FeatureStore
from feature_worker.tables import TableFollower, wait_partitions
from feature_worker.topics import Topics
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from server.ingest import Ingest

#: How long a catalog or user write waits for this server's own copy to catch up before answering.
FOLLOW_TIMEOUT_S = 30.0


class KafkaIngest(Ingest):
    """Produces to Kafka; see the module docstring for what an answer means."""

    erasure_step = (
        "users_topic",
        "tombstoned",
        "customer record tombstoned: every server and worker drops it, and compaction removes it from the topic",
    )
    events_held_in = "event topic"

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topics: Topics,
        tables: TableFollower,
        store: FeatureStore,
        catalog: Catalog,
        vault: Vault | None = None,
        bootstrap: str = "",
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.tables = tables
        self.store = store
        self.catalog = catalog
        self.vault = vault
        #: Where `held_events` reads the event topic from.
        self.bootstrap = bootstrap

    async def events(self, events: Sequence[events_pb2.Event]) -> int:
        """Produce the events that are not known duplicates; returns how many were.

        Known duplicates: an event repeated in the request, or one whose id its user's stored features
        already hold. An event produced but not yet folded is not known, and is folded once anyway.
        While Redis is unreachable only the first kind is known: events are still taken (Kafka is the log).
        """
        fresh: list[events_pb2.Event] = []
        seen: set[tuple[str, str]] = set()
        for event in events:
            key = (event.user_id, event.event_id)
            if key not in seen:
                seen.add(key)
                fresh.append(event)
        users = {event.user_id for event in fresh}
        try:
            states = await self.store.load_users(users)  # with a vault: also each user's key, created if new
        except StoreUnavailable:
            pass  # Kafka is the log: events are taken while Redis is away, and folded once it is back
        else:
            fresh = [e for e in fresh if event_key(e.event_id) not in states[e.user_id].applied_ids]
        if self.vault is None:
            await self._produce(self.topics.events, [(e.user_id, e.SerializeToString()) for e in fresh])
            return len(events) - len(fresh)
        keys = self._keys(users)
        await self._produce(
            self.topics.events,
            [(e.user_id, seal_event(keys[e.user_id], e.user_id, e.SerializeToString())) for e in fresh],
        )
        return len(events) - len(fresh)

    def _keys(self, users: set[str]) -> dict[str, DataKey]:
        """The users' keys as `load_users` just read them (or, while Redis is away, as last cached)."""
        assert self.vault is not None
        keys = {user: self.vault.cached(user) for user in users}
        missing = [user for user, key in keys.items() if key is None]
        if missing:
            raise StoreUnavailable(
                "Redis is unavailable and the data keys of some users are not cached: "
                "their events cannot be sealed"
            )
        return {user: key for user, key in keys.items() if key is not None}

    async def upsert_items(self, items: Sequence[catalog_pb2.Item]) -> None:
        await self._produce_and_follow(self.topics.items, [(i.item_id, i.SerializeToString()) for i in items])

    async def delete_items(self, item_ids: Sequence[str]) -> int:
        existed = len({item_id for item_id in item_ids if item_id in self.catalog})
        await self._produce_and_follow(self.topics.items, [(item_id, None) for item_id in item_ids])
        return existed

    async def upsert_user(self, user: users_pb2.User) -> None:
        value = user.SerializeToString()
        if self.vault is not None:
            key = (await self.vault.keys([user.user_id], create=True))[user.user_id]
            value = seal_user(key, user.user_id, value)
        await self._produce_and_follow(self.topics.users, [(user.user_id, value)])

    async def delete_user(self, user_id: str) -> bool:
        """Tombstone the customer on the users topic (compaction then drops their record) and wait until this
        server's directory has applied it; every other process follows within milliseconds."""
        await self._produce_and_follow(self.topics.users, [(user_id, None)])
        return True

    async def held_events(self, user_id: str) -> list[events_pb2.Event]:
        """The customer's readable events on the event topic: a scan of their partition (the one their id
        hashes to), from its first retained record to its end. Events sealed with a destroyed key are gone."""
        key = user_id.encode()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = sorted(await wait_partitions(consumer, self.topics.events))
            tp = TopicPartition(self.topics.events, DefaultPartitioner()(key, partitions, partitions))
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            mine = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                mine += [r for r in batch.get(tp, []) if r.key == key and r.offset < end and r.value]
            opener = EventOpener(self.vault) if self.vault is not None else None
            if opener is not None:
                await opener.prefetch(mine)
            held = []
            for record in mine:
                value: bytes | None = record.value
                if value is not None and is_sealed(value):
                    value = opener(user_id, value) if opener is not None else None
                if value is None:
                    continue
                try:
                    held.append(decode(value, events_pb2.Event))
                except InvalidArgument:
                    continue  # the feature workers dead-letter it: not held as an event
            return held
        except KafkaError as exc:
            raise StoreUnavailable(f"cannot read {self.topics.events}: {exc!r}") from exc
        finally:
            await consumer.stop()

    async def _produce(self, topic: str, records: Sequence[tuple[str, bytes | None]]) -> list[Any]:
        try:
            futures = [
                await self.producer.send(topic, value=value, key=key.encode()) for key, value in records
            ]
            return list(await asyncio.gather(*futures))
        except KafkaError as exc:
            raise StoreUnavailable(f"Kafka did not acknowledge the write to {topic}: {exc!r}") from exc

    async def _produce_and_follow(self, topic: str, records: Sequence[tuple[str, bytes | None]]) -> None:
        acks = await self._produce(topic, records)
        last: dict[TopicPartition, int] = {}
        for ack in acks:
            tp = TopicPartition(ack.topic, ack.partition)
            last[tp] = max(last.get(tp, -1), ack.offset)
        try:
            await asyncio.wait_for(self.tables.wait_for_offsets(last), FOLLOW_TIMEOUT_S)
        except TimeoutError as exc:
            raise StoreUnavailable(f"{topic} was written, but this server has not read it back yet") from exc

    async def close(self) -> None:
        await self.producer.stop()
        await self.tables.stop()
