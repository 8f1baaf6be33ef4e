"""The feature worker's loop: consume events, fold them into the store, dead-letter the bad, commit.

Per batch (up to `Settings.batch_max` records from the partitions this worker owns):

1. decode and validate every record; a record that cannot be folded is a dead letter (`dead_letters`);
2. wait until the catalog holds every item acknowledged before the batch was fetched
   (`TableFollower.catch_up`), so affinities do not depend on which topic was read first;
3. load the batch's users (one MGET) and fold the events (`apply.fold_batch`);
4. write the changed users and the item deltas in one atomic commit (`FeatureStore.commit`);
5. once the commit is confirmed: produce the dead letters and wait for the broker's acknowledgement;
6. only then commit the batch's offsets.

Two batches overlap: batch N+1 is fetched, loaded and folded while batch N's commit runs in Redis
(users of N+1 that are in N take their state from N's fold, the others are loaded before N's commit
is sent, so no read ever sees a half-written batch). N's dead letters and offsets still follow N's
confirmed commit, and N+1's commit is only sent after that. If N's commit fails (Redis unreachable),
N+1's fold is thrown away, N is applied again from what Redis holds (with retries), then N+1.

Guarantees kept here:
- At-least-once delivery, effectively once: offsets are committed after the store and the dead-letter
  topic hold the batch, so a crash anywhere before the commit redelivers the batch, and redelivered
  events are recognised by the applied ids stored with their user (nothing counts twice: one batch is
  redelivered at most, and `batch_max <= FoldConfig.applied_ids_cap`). A dead letter may be written
  twice (at-least-once, with its origin in its headers).
- One writer per user: events are keyed by user id, a partition belongs to one worker of the group, and
  a partition taken away in a rebalance is only handed over once the batches in flight are committed
  (the revocation waits for them). Records whose key is not their user id are dead-lettered, since they
  could be folded by two workers at once.
- `stop` (SIGTERM) finishes the batches in flight, commits them and leaves the group.
Scale by running more workers with the same `group_id` (up to the number of event partitions).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, KafkaError

from feature_worker.apply import BatchResult, apply_events, fold_batch
from feature_worker.catalog import Catalog
from feature_worker.config import Settings
from feature_worker.dead_letters import DeadLetter, events_of, produce_dead_letters
from feature_worker.errors import StoreUnavailable
from feature_worker.fold import FoldConfig, ItemDeltas
from feature_worker.metrics import WorkerMetrics
from feature_worker.privacy.events import EventOpener
from feature_worker.state import UserState
from feature_worker.stores.base import FeatureStore
from feature_worker.tables import TableFollower
from protos.aisle.v1 import events_pb2

log = logging.getLogger(__name__)

#: Longest wait between two tries of a batch while Redis or Kafka is unreachable.
MAX_BACKOFF_S = 2.0
#: Allocations between two young-generation collections while consuming (CPython's default is 700).
YOUNG_GC_THRESHOLD = 50_000


@dataclass(slots=True)
class _Batch:
    """One fetched batch on its way through: events, dead letters, offsets, and its fold once done."""

    events: list[events_pb2.Event]
    dead: list[DeadLetter]
    offsets: dict[TopicPartition, int]
    started: float
    #: The users this batch changed, as its commit writes them (what the next batch folds on).
    states: dict[str, UserState] = field(default_factory=dict)
    deltas: ItemDeltas = field(default_factory=ItemDeltas)
    #: The fold cannot be used (Redis failed under it): apply the batch again from the store.
    redo: bool = False
    commit: asyncio.Future[None] | None = None
    result: BatchResult = field(default_factory=lambda: BatchResult(0, 0))


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands partitions over only after the batches in flight are written and committed."""

    def __init__(self, worker: FeatureWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.worker.batch_lock:
            await self.worker.flush()
            for tp in revoked:
                self.worker.metrics.forget_partition(tp.partition)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        ready = self.worker.ready_file
        if ready is not None and not ready.exists():
            ready.write_text("ready\n")


class FeatureWorker:
    """One worker process's consumer loop over one store."""

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        tables: TableFollower,
        catalog: Catalog,
        metrics: WorkerMetrics,
        config: FoldConfig = FoldConfig(),
        ready_file: Path | None = None,
        opener: EventOpener | None = None,
    ) -> None:
        self.settings = settings
        #: Opens sealed events (encryption on); None reads only clear ones.
        self.opener = opener
        self.store = store
        self.tables = tables
        self.catalog = catalog
        self.metrics = metrics
        self.config = config
        self.ready_file = ready_file
        self.batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._inflight: _Batch | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; the batches in flight are finished and committed first."""
        self._stopping = stopping
        settings = self.settings
        topics = settings.topics
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        consumer.subscribe([topics.events], listener=_FlushOnRevoke(self))
        await consumer.start()
        await self._producer.start()
        log.info("feature worker consuming %s as group %s", topics.events, settings.group_id)
        # Decoding and folding allocate a few dozen short-lived containers per event; with CPython's
        # default (a young collection every 700 allocations) the collector takes about a tenth of the
        # worker's CPU. Collect young objects less often while consuming (restored on the way out).
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_GC_THRESHOLD, *thresholds[1:])
        try:
            while not stopping.is_set():
                # While a commit is in flight, do not wait for more: finish it if nothing is there.
                timeout = 0 if self._inflight is not None else 200
                batches = await consumer.getmany(timeout_ms=timeout, max_records=settings.batch_max)
                async with self.batch_lock:
                    if batches:
                        await self._next(batches)
                    else:
                        await self.flush()
                    self._update_lag(consumer)
                self.metrics.maybe_log(settings.log_every_s)
            async with self.batch_lock:
                await self.flush()
        finally:
            gc.set_threshold(*thresholds)
            await consumer.stop()
            await self._producer.stop()
            log.info(
                "feature worker stopped: %d applied, %d duplicates, %d dead-lettered, %d sealed events of "
                "erased customers skipped",
                self.metrics.applied,
                self.metrics.duplicates,
                self.metrics.dead,
                self.opener.shredded if self.opener is not None else 0,
            )

    async def _next(self, records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Fold a new batch while the previous one's commit runs, then finish that one, then commit this."""
        started = time.perf_counter()
        catching_up = asyncio.ensure_future(self.tables.catch_up())
        if self.opener is not None:
            await self._prefetch_keys(records)
        events, dead = events_of(records, self.settings.max_event_bytes, self.opener)
        batch = _Batch(events, dead, {tp: rs[-1].offset + 1 for tp, rs in records.items()}, started)
        previous = self._inflight
        if events:
            try:
                await self._load_and_fold(batch, previous, catching_up)
            except StoreUnavailable:
                batch.redo = True
        await catching_up
        if previous is not None and not await self._finish(previous):
            batch.redo = True  # folded on states whose commit failed
        self._inflight = batch
        if not events:
            return
        if batch.redo:
            batch.states = {}
            batch.result = await self._apply_with_retry(batch.events)
        elif batch.states:
            batch.commit = asyncio.ensure_future(self.store.commit(batch.states, batch.deltas))
            await asyncio.sleep(0)  # the commit reads the states now; the next fold may change them

    async def _prefetch_keys(self, records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """The data keys of the batch's sealed events; while Redis is unreachable, try again."""
        assert self.opener is not None
        backoff = 0.05
        while True:
            try:
                await self.opener.prefetch(r for rs in records.values() for r in rs)
                return
            except StoreUnavailable as exc:
                self.metrics.store_retries.inc()
                log.warning("%s; retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _load_and_fold(
        self, batch: _Batch, previous: _Batch | None, catching_up: asyncio.Future[None]
    ) -> None:
        """Users of the batch in flight carry on from its fold; the others come from the store.

        The users load while the catalog catches up; the fold waits for both.
        """
        carried = previous.states if previous is not None and previous.commit is not None else {}
        wanted = {event.user_id for event in batch.events}
        loaded = await self.store.load_users(wanted - carried.keys())
        await catching_up
        states = {user: carried[user] if user in carried else loaded[user] for user in wanted}
        batch.states, batch.deltas, applied = fold_batch(
            states, self.catalog, batch.events, self.config, self.store.delta_group
        )
        batch.result = BatchResult(applied, len(batch.events) - applied)

    async def _finish(self, batch: _Batch) -> bool:
        """Wait for the batch's commit (redoing the batch if it failed), then dead letters, then offsets.

        Returns False when the commit had failed, so that a batch folded on top of it must be redone.
        """
        clean = True
        if batch.commit is not None:
            try:
                await batch.commit
            except StoreUnavailable as exc:
                log.warning("%s; applying the batch again", exc)
                self.metrics.store_retries.inc()
                batch.result = await self._apply_with_retry(batch.events)
                clean = False
        assert self._producer is not None and self._consumer is not None
        if batch.dead:
            await produce_dead_letters(self._producer, self.settings.topics.dlq, batch.dead)
        await self._commit_offsets(self._consumer, batch.offsets)
        self.metrics.count(batch.result.applied, batch.result.duplicates, len(batch.dead))
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        return clean

    async def flush(self) -> None:
        """Finish the batch in flight, if any: its commit, dead letters and offsets."""
        batch, self._inflight = self._inflight, None
        if batch is not None:
            await self._finish(batch)

    async def _apply_with_retry(self, events: Sequence[events_pb2.Event]) -> BatchResult:
        """Fold a batch from what the store holds; while Redis is unreachable, try again (idempotent)."""
        backoff = 0.05
        while True:
            try:
                return await apply_events(self.store, self.catalog, events, self.config)
            except StoreUnavailable as exc:
                self.metrics.store_retries.inc()
                if self._stopping.is_set():
                    raise  # not committed: the batch is redelivered to whoever runs next
                log.warning("%s; retrying the batch in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _commit_offsets(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit the batch's offsets; while the broker cannot be reached, try again."""
        backoff = 0.05
        while True:
            try:
                await consumer.commit(offsets)
                break
            except CommitFailedError as exc:
                # The group rebalanced: another worker owns some of these partitions now and gets the
                # batch again from the last commit; folding it there is idempotent.
                log.warning("offsets not committed (%s); the new owner re-reads the batch", exc)
                return
            except KafkaError as exc:
                log.warning("offsets not committed (%r); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        self._committed.update(offsets)
        for tp, offset in offsets.items():
            self.metrics.committed.labels(str(tp.partition)).set(offset)

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            committed = self._committed.get(tp)
            if highwater is not None and committed is not None:  # unknown before this worker's first commit
                self.metrics.set_lag(tp.partition, max(0, highwater - committed))
