"""Exposure logging: every answer, once, off the request path.

`ExposureLog.record` is all a Recommend pays: it appends one tuple to a bounded buffer and returns. When the
buffer is full the exposure is dropped and counted (`dropped`, exported as ``aisle_exposures_total{result=
"dropped"}``): a slow sink never slows or fails a Recommend. A task drains the buffer every `flush_s` seconds (or
once `batch_max` wait) in batches, builds the `aisle.v1.Exposure` messages in a worker thread and hands each batch
to every sink in turn:

- `JournalExposureSink` (embedded): one `ExposureBatch` record per batch in ``<data_dir>/exposures.bin``;
- `KafkaExposureSink` (Kafka mode): one record per exposure on ``<prefix>.exposures``, keyed by user (or session);
- `LakeExposureSink` (when a lake is configured): the lake's `exposures` table (`server.experiments.lake`).

A sink that fails is logged and its batch is lost for that sink only (counted in `failed`); the others still get
it. `close` drains what is queued. Exposures of customers who refused analytics are never recorded.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer

from protos.aisle.v1 import experiments_pb2
from server.embedded.journal import Journal, RecordKind
from server.experiments.lake import ExposureTable
from server.tasks import stop

log = logging.getLogger(__name__)

#: (recommendation_id, user_id, session_id, ts_ms, variant, experiments, item_ids, teams, model_version,
#: backfilled, served_us, context_item_id): what a request hands over, turned into a message by the drain task.
Pending = tuple[
    str, str, str, int, str, tuple[tuple[str, str], ...], list[str], Sequence[str], str, int, int, str
]


class ExposureSink(ABC):
    """Where batches of exposures go."""

    name: str = "sink"

    @abstractmethod
    async def write(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        """Store the batch (raise on failure: the log counts it)."""

    async def close(self) -> None:
        """Release what the sink holds."""


class MemoryExposureSink(ExposureSink):
    """Keeps every exposure in a list (tools and unit tests)."""

    name = "memory"

    def __init__(self) -> None:
        self.exposures: list[experiments_pb2.Exposure] = []

    async def write(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        self.exposures.extend(exposures)


class JournalExposureSink(ExposureSink):
    """The embedded server's exposure journal: one `ExposureBatch` record per batch, written in a worker thread."""

    name = "journal"

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.journal = Journal(path, fsync=fsync)

    async def write(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        await asyncio.to_thread(self._append, exposures)

    def _append(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        payload = experiments_pb2.ExposureBatch(exposures=exposures).SerializeToString()
        self.journal.append(RecordKind.EXPOSURES, payload)

    async def close(self) -> None:
        self.journal.close()


def read_journal(path: Path) -> list[experiments_pb2.Exposure]:
    """Every exposure in an exposure journal, oldest first (tools, tests)."""
    journal = Journal(path)
    try:
        out: list[experiments_pb2.Exposure] = []
        for kind, payload in journal.replay():
            if kind == RecordKind.EXPOSURES:
                out.extend(experiments_pb2.ExposureBatch.FromString(payload).exposures)
        return out
    finally:
        journal.close()


class KafkaExposureSink(ExposureSink):
    """``<prefix>.exposures``: one protobuf `Exposure` per record, keyed by user id (else session id)."""

    name = "kafka"

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def write(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        records = await asyncio.to_thread(_records, exposures)
        sends = [await self.producer.send(self.topic, value, key=key) for key, value in records]
        await asyncio.gather(*sends)


def _records(exposures: Sequence[experiments_pb2.Exposure]) -> list[tuple[bytes, bytes]]:
    return [
        ((e.user_id or e.session_id or e.recommendation_id).encode(), e.SerializeToString())
        for e in exposures
    ]


class LakeExposureSink(ExposureSink):
    """The lake's `exposures` table, appended in a worker thread."""

    name = "lake"

    def __init__(self, root: str | Path) -> None:
        self.table = ExposureTable(root)

    async def write(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        await asyncio.to_thread(self.table.append, exposures)


class ExposureLog:
    """The bounded buffer between Recommend and the sinks, and the task that drains it.

    A plain deque, not an `asyncio.Queue`: appending wakes nobody, so a request pays for an append and a length
    check only. The drain task wakes every `flush_s` seconds, or as soon as `batch_max` exposures wait, and
    writes everything waiting in batches of at most `batch_max`.
    """

    def __init__(
        self,
        sinks: Sequence[ExposureSink],
        capacity: int = 10_000,
        batch_max: int = 500,
        flush_s: float = 0.5,
    ) -> None:
        self.sinks = list(sinks)
        self.capacity = capacity
        self.batch_max = batch_max
        self.flush_s = flush_s
        self._waiting: deque[Pending] = deque()
        self._full = asyncio.Event()
        #: Exposures recorded, dropped (buffer full), written (per sink) and lost to failing sinks (per sink).
        self.recorded = 0
        self.dropped = 0
        self.written: dict[str, int] = {sink.name: 0 for sink in self.sinks}
        self.failed: dict[str, int] = {sink.name: 0 for sink in self.sinks}
        self._task: asyncio.Task[None] | None = None
        #: The batch being written: `close` writes it if the drain task is cancelled in the middle.
        self._writing: list[Pending] = []

    def record(self, pending: Pending) -> None:
        """Buffer one exposure; never blocks, never raises (a full buffer drops it and counts the drop)."""
        waiting = self._waiting
        if len(waiting) >= self.capacity:
            self.dropped += 1
            return
        waiting.append(pending)
        self.recorded += 1
        if len(waiting) == self.batch_max:
            self._full.set()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._full.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered now (the drain task, tests, shutdown)."""
        waiting = self._waiting
        while waiting:
            batch = [waiting.popleft() for _ in range(min(self.batch_max, len(waiting)))]
            self._writing = batch
            await self._write(batch)
            self._writing = []

    async def _write(self, batch: list[Pending]) -> None:
        # Building the messages is the costly part: a worker thread does it (the server hands the GIL back to
        # the event loop every millisecond), so a batch never holds up requests for its whole length.
        messages = await asyncio.to_thread(_messages, batch)
        for sink in self.sinks:
            try:
                await sink.write(messages)
                self.written[sink.name] += len(messages)
            except Exception:  # one failing sink must not stop the others nor the drain task
                self.failed[sink.name] += len(messages)
                log.exception("exposure sink %s failed: %d exposures lost for it", sink.name, len(messages))

    async def close(self) -> None:
        """Stop draining, write what is buffered, close the sinks."""
        await stop(self._task)
        self._task = None
        if self._writing:  # cancelled in the middle of a batch: it may be written twice rather than lost
            batch, self._writing = self._writing, []
            await self._write(batch)
        await self.flush()
        for sink in self.sinks:
            await sink.close()


def _messages(batch: list[Pending]) -> list[experiments_pb2.Exposure]:
    return [_message(p) for p in batch]


def _message(p: Pending) -> experiments_pb2.Exposure:
    rid, user, session, ts_ms, variant, experiments, items, teams, model, backfilled, served_us, context = p
    return experiments_pb2.Exposure(
        recommendation_id=rid,
        user_id=user,
        session_id=session,
        ts_ms=ts_ms,
        variant=variant,
        experiments=dict(experiments),
        item_ids=items,
        teams=teams,
        model_version=model,
        backfilled=backfilled,
        served_us=served_us,
        context_item_id=context,
    )
