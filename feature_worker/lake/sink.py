"""The batch sink: a second consumer group that appends every event and every catalog change to the lake.

`python -m feature_worker sink` consumes `<prefix>.events`, `.items` and `.users` as the group
`Settings.sink_group_id` (apart from the feature workers, so each group reads every record), buffers up to
`sink_batch_max` records or `sink_flush_s` seconds, and appends them to the tables `events`, `items` and
`users` (`feature_worker.lake.schema`).

Guarantees kept here:
- Exactly once per Kafka record, crash or not: each append records, in the same Delta commit, the offset
  after the last record of every partition it covers (`Lake.append`). When partitions are assigned (start,
  rebalance) the sink seeks each one to the offset recorded in its table, not to Kafka's committed offset,
  and it never buffers a record below the offset it has reached. A crash between the Delta commit and the
  Kafka commit therefore re-reads nothing; a crash before the Delta commit re-reads the whole batch.
  Kafka's committed offsets follow the Delta commits only so that lag tools (`feature_worker.lag`) work.
- A record the feature worker would not fold goes to `<prefix>.dlq` instead (the same checks:
  `dead_letters.events_of`; for items and users the checks of `CatalogService`/`UserService`), with the header
  `aisle.dlq.consumer` naming the sink's group; the dead letters are acknowledged by the broker before the
  Delta commit that moves past them, so they are written at least once. Good records beside them land.
- Sealed events (encryption on) are opened with their customer's key; those whose key is gone (an erased
  customer) are skipped, so a replay never writes them back. Events of customers whose consent says no to
  analytics (`UserDirectory.analytics_allowed`, followed from `<prefix>.users` as the feature workers do) are
  withheld: they never reach the lake, and so never training.
- Which events: every accepted record, duplicates included (a producer that retries sends an event id
  twice); readers drop repeated event ids (`trainer.data.delta`), as the fold does.
- Another sink that still writes partitions taken from it in a rebalance is refused by `Lake.append`
  (`LakeConflict`): this sink then drops what it buffered for that table and seeks to the recorded offsets.
- SIGTERM (`stopping`): the buffer is appended and committed, then the sink leaves the group. A revocation
  appends the buffer before the partitions are handed over.
Memory: at most `sink_batch_max` records are buffered (about 1 KB each as rows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, KafkaError

from feature_worker.changes import decode_item, decode_user
from feature_worker.config import Settings
from feature_worker.dead_letters import DeadLetter, produce_dead_letters, record_events
from feature_worker.errors import InvalidArgument, StoreUnavailable
from feature_worker.lake.schema import (
    EVENTS,
    ITEMS,
    TABLES,
    USERS,
    EventRows,
    ItemRows,
    Rows,
    UserRows,
    rows_for,
)
from feature_worker.lake.writer import Lake, LakeConflict, append_retrying
from feature_worker.privacy.events import EventOpener
from feature_worker.tables import TableFollower

log = logging.getLogger(__name__)

#: Header added to the sink's dead letters: the feature workers dead-letter the same bad event too.
CONSUMER = "aisle.dlq.consumer"
MAX_BACKOFF_S = 2.0


def app_id(tp: TopicPartition) -> str:
    """The Delta application id under which a partition's offset is recorded."""
    return f"kafka:{tp.topic}:{tp.partition}"


@dataclass(slots=True)
class SinkDeadLetter(DeadLetter):
    group: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        return [*DeadLetter.headers(self), (CONSUMER, self.group.encode())]


class _SeekToLake(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: BatchSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.sink.lock:
            await self.sink.flush()
            self.sink.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.sink.lock:
            await self.sink.seek_to_lake(assigned)
        ready = self.sink.ready_file
        if ready is not None and not ready.exists():
            ready.write_text("ready\n")


class BatchSink:
    """One sink process's consumer loop over one lake."""

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        ready_file: Path | None = None,
        opener: EventOpener | None = None,
        tables: TableFollower | None = None,
    ) -> None:
        self.settings = settings
        self.lake = lake
        self.ready_file = ready_file
        #: Opens sealed events (encryption on).
        self.opener = opener
        #: The customers' consent, followed from the users topic (None: every event lands).
        self.tables = tables
        #: Events withheld from the lake for want of analytics consent.
        self.withheld = 0
        self.lock = asyncio.Lock()
        topics = settings.topics
        self.table_of = {topics.events: EVENTS, topics.items: ITEMS, topics.users: USERS}
        #: Per assigned partition: the offset recorded in the lake (None: nothing yet), where the buffer starts.
        self._start: dict[TopicPartition, int | None] = {}
        #: Per assigned partition: the offset after the last buffered record.
        self._end: dict[TopicPartition, int] = {}
        self._rows: dict[str, Rows] = {name: rows_for(name) for name in TABLES}
        self._dead: list[DeadLetter] = []
        self._buffered = 0
        self._since: float | None = None
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.appended = dict.fromkeys(TABLES, 0)
        self.dead = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; the buffer is appended and committed first."""
        self._stopping = stopping
        settings = self.settings
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.sink_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # As the feature workers: a crashed sink's partitions move on within 10 s.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # An append of a full batch to object storage may take a while; the loop polls after it.
            max_poll_interval_ms=600_000,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        consumer.subscribe(list(self.table_of), listener=_SeekToLake(self))
        await self._producer.start()
        await consumer.start()
        log.info(
            "batch sink consuming %s as group %s into %s",
            sorted(self.table_of),
            settings.sink_group_id,
            self.lake.root,
        )
        try:
            while not stopping.is_set():
                room = max(1, settings.sink_batch_max - self._buffered)
                batches = await consumer.getmany(timeout_ms=200, max_records=room)
                if batches:
                    await self._prepare(batches)
                async with self.lock:
                    for tp, records in batches.items():
                        self._buffer(tp, records)
                    if self._due():
                        await self.flush()
            async with self.lock:
                await self.flush()
        finally:
            await consumer.stop()
            await self._producer.stop()
            log.info(
                "batch sink stopped: appended %s, %d dead-lettered, %d withheld (no analytics consent)",
                self.appended,
                self.dead,
                self.withheld,
            )

    async def _prepare(
        self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Before buffering: consent as acknowledged so far, and the keys of the batch's sealed events."""
        backoff = 0.1
        while True:
            try:
                if self.tables is not None:
                    await self.tables.catch_up()
                if self.opener is not None:
                    await self.opener.prefetch(r for rs in batches.values() for r in rs)
                return
            except StoreUnavailable as exc:
                log.warning("%s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _due(self) -> bool:
        if self._buffered >= self.settings.sink_batch_max:
            return True
        return self._since is not None and time.monotonic() - self._since >= self.settings.sink_flush_s

    def _buffer(self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        end = self._end.get(tp)
        if end is None:
            return  # not (or no longer) ours
        records = [r for r in records if r.offset >= end]  # never twice, whatever the fetcher replays
        if not records:
            return
        table = self.table_of[tp.topic]
        if table == EVENTS:
            self._buffer_events(tp, records)
        else:
            self._buffer_changes(table, tp, records)
        self._end[tp] = records[-1].offset + 1
        self._buffered += len(records)
        if self._since is None:
            self._since = time.monotonic()

    def _buffer_events(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        pairs, dead = record_events({tp: records}, self.settings.max_event_bytes, self.opener)
        self._dead_letters(dead)
        rows = self._rows[EVENTS]
        assert isinstance(rows, EventRows)
        users = self.tables.users if self.tables is not None else None
        for record, event in pairs:
            if users is not None and not users.analytics_allowed(event.user_id):
                self.withheld += 1
                continue
            rows.add(event, record.partition, record.offset)

    def _buffer_changes(
        self, table: str, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Item or user changes, checked as `TableFollower` applies them: a null value deletes the key."""
        rows = self._rows[table]
        assert isinstance(rows, ItemRows | UserRows)
        dead: list[DeadLetter] = []
        for record in records:
            key = (record.key or b"").decode("utf-8", "replace")
            ts = max(record.timestamp, 0)
            if record.value is None:
                if key:
                    rows.delete(key, ts, record.partition, record.offset)
                else:
                    dead.append(DeadLetter(record, "key: a delete (null value) needs the id as its key"))
                continue
            try:
                if isinstance(rows, ItemRows):
                    rows.upsert(decode_item(record.value), ts, record.partition, record.offset)
                else:
                    user = decode_user(key, record.value, self.opener, "sink")
                    if user is not None:  # None: an erased customer's record (their key is gone)
                        rows.upsert(user, ts, record.partition, record.offset)
            except InvalidArgument as exc:
                dead.append(DeadLetter(record, "; ".join(f"{f}: {r}" for f, r in exc.violations)))
        self._dead_letters(dead)

    def _dead_letters(self, dead: list[DeadLetter]) -> None:
        group = self.settings.sink_group_id
        self._dead.extend(SinkDeadLetter(d.record, d.reason, group) for d in dead)

    async def flush(self) -> None:
        """Dead letters (acknowledged), then one Delta commit per table, then Kafka offsets (for lag only)."""
        moved = {tp: end for tp, end in self._end.items() if end != self._start.get(tp)}
        if not moved:
            self._reset_buffer()
            return
        assert self._producer is not None and self._consumer is not None
        if self._dead:
            await produce_dead_letters(self._producer, self.settings.topics.dlq, self._dead)
            self.dead += len(self._dead)
        for table in TABLES:
            covered = {tp: end for tp, end in moved.items() if self.table_of[tp.topic] == table}
            if covered:
                await self._append(table, covered)
        self._reset_buffer()
        await self._commit_kafka({tp: end for tp, end in moved.items() if self._start.get(tp) == end})

    async def _append(self, table: str, covered: Mapping[TopicPartition, int]) -> None:
        rows = self._rows[table]
        data = rows.table()
        positions = {app_id(tp): end for tp, end in covered.items()}
        expected = {app_id(tp): self._start[tp] for tp in covered}
        stopping = self._stopping
        try:
            # Stopping, an append that cannot be written is given up: the records are read again by whoever runs next.
            version = await asyncio.to_thread(
                append_retrying,
                self.lake,
                table,
                data,
                positions,
                expected,
                f"sink:{self.settings.sink_group_id}",
                lambda _: stopping.is_set(),
            )
        except LakeConflict as exc:
            log.error(
                "%s; dropping %d buffered rows and re-reading from the recorded offsets", exc, len(rows)
            )
            await self.seek_to_lake(list(covered))
            return
        for tp, end in covered.items():
            self._start[tp] = end
        self.appended[table] += len(rows)
        log.info("appended %d rows to %s (version %d)", len(rows), table, version)

    def _reset_buffer(self) -> None:
        self._rows = {name: rows_for(name) for name in TABLES}
        self._dead = []
        self._buffered = 0
        self._since = None

    async def _commit_kafka(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Only lag tools read these: the lake holds the offsets that count.
            log.warning("Kafka offsets not committed (%r); the lake has them", exc)

    async def seek_to_lake(self, partitions: Sequence[TopicPartition]) -> None:
        """Point each partition at the offset its table records (the beginning when none)."""
        consumer = self._consumer
        assert consumer is not None
        for table in {self.table_of[tp.topic] for tp in partitions}:
            await asyncio.to_thread(self.lake.refresh, table)
        for tp in partitions:
            recorded = self.lake.position(self.table_of[tp.topic], app_id(tp))
            self._start[tp] = recorded
            if recorded is None:
                await consumer.seek_to_beginning(tp)
                self._end[tp] = 0
            else:
                consumer.seek(tp, recorded)
                self._end[tp] = recorded
            log.info(
                "partition %s/%d from offset %s (recorded in the lake)", tp.topic, tp.partition, recorded
            )

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._start.pop(tp, None)
            self._end.pop(tp, None)
