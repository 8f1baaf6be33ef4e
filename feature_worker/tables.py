"""Following the compacted `items` and `users` topics into the in-memory `Catalog` and `UserDirectory`.

Every server and every worker holds the whole catalog and user directory in memory (the fold needs
item categories for affinities; the server needs stock, filters and consent on every request). Each
process reads both topics from the beginning when it starts, and follows them from then on.

Guarantees kept here:
- `start` returns once everything the topics held when it was called has been applied.
- `catch_up` returns once everything acknowledged by the broker before it was called has been applied:
  the worker calls it before folding a batch, so an item upserted before an event was produced is known
  when that event is folded (its category and brand count for affinities).
- `wait_for` gives read-your-writes to the process that produced a change.
A record that cannot be read is logged, counted and skipped (these topics are written through the
validated gRPC edge; other producers see their mistakes in the log). A null value deletes the key.
Sealed customer records (encryption on) are opened with `opener`, which fetches the keys of each fetched
batch first; a record whose key is gone (an erased customer) is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from feature_worker.catalog import Catalog
from feature_worker.changes import decode_item, decode_user
from feature_worker.errors import InvalidArgument, StoreUnavailable
from feature_worker.privacy.events import EventOpener
from feature_worker.topics import Topics
from feature_worker.users import UserDirectory

log = logging.getLogger(__name__)


class TableFollower:
    """Applies the item and user topics to a catalog and a user directory, in one background task."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        catalog: Catalog,
        users: UserDirectory,
        opener: EventOpener | None = None,
    ) -> None:
        self.topics = topics
        self.catalog = catalog
        self.users = users
        #: Opens sealed customer records (encryption on); its own, not shared with another consumer.
        self.opener = opener
        self.skipped = 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        self._partitions: list[TopicPartition] = []
        #: Next offset to apply, per partition: everything below it is in the catalog / directory.
        self._applied: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = self._consumer
        await consumer.start()
        for topic in (self.topics.items, self.topics.users):
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                partitions = await wait_partitions(consumer, topic)
            self._partitions += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        for tp in self._partitions:
            self._applied[tp] = await consumer.position(tp)
        self._task = asyncio.create_task(self._follow(), name="aisle-table-follower")
        await self.catch_up()
        log.info(
            "catalog: %d items, %d users from %s/%s",
            len(self.catalog),
            len(self.users),
            self.topics.items,
            self.topics.users,
        )

    async def catch_up(self) -> None:
        """Return once every record the broker held when this was called has been applied.

        While the broker cannot be reached, ask again (a restarting broker is back within seconds).
        """
        backoff = 0.05
        while True:
            try:
                ends = await self._consumer.end_offsets(self._partitions)
                break
            except KafkaError as exc:
                log.warning("cannot read the end offsets of the catalog topics (%r); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        await self.wait_for_offsets({tp: end - 1 for tp, end in ends.items()})

    async def wait_for(self, topic: str, partition: int, offset: int) -> None:
        """Return once the record at `offset` (and everything before it) has been applied."""
        await self.wait_for_offsets({TopicPartition(topic, partition): offset})

    async def wait_for_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        while any(self._applied.get(tp, 0) <= offset for tp, offset in offsets.items()):
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise what stopped the follower
                raise RuntimeError("the table follower has stopped")
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), 1.0)
            except TimeoutError:
                pass

    async def _follow(self) -> None:
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            if self.opener is not None and batches:
                await self._prefetch([r for rs in batches.values() for r in rs])
            for tp, records in batches.items():
                for record in records:
                    self._apply(tp.topic, record)
            for tp in self._partitions:
                # The position also moves past offsets that compaction removed.
                self._applied[tp] = await consumer.position(tp)
            self._progress.set()

    async def _prefetch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self.opener is not None
        backoff = 0.05
        while True:
            try:
                await self.opener.prefetch(records)
                return
            except StoreUnavailable as exc:
                log.warning("%s; retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _apply(self, topic: str, record: ConsumerRecord[bytes, bytes]) -> None:
        key = (record.key or b"").decode("utf-8", "replace")
        value = record.value
        try:
            if topic == self.topics.items:
                if value is None:
                    self.catalog.delete([key])
                    return
                self.catalog.upsert(decode_item(value))
            else:
                if value is None:
                    self.users.delete_user(key)
                    return
                user = decode_user(key, value, self.opener, "process")
                if user is not None:  # None: an erased customer's record (their key is gone)
                    self.users.upsert(user)
        except InvalidArgument as exc:
            self.skipped += 1
            log.warning(
                "skipping %s record at %d/%d (key %r): %s",
                topic,
                record.partition,
                record.offset,
                key[:64],
                exc,
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def wait_partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 30.0) -> set[int]:
    """The topic's partitions, once the broker's metadata has them (just after topic creation)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions; was it created?")
        await asyncio.sleep(0.1)
