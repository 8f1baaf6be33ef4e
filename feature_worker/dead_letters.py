"""Turning consumed records into events, and the records that cannot be folded into dead letters.

A dead letter is the original record (key, value and headers) written to `<prefix>.dlq`, with these
headers added, so that the shop can see what was wrong, fix the producer and replay:

- `aisle.dlq.reason`: what is wrong, e.g. `user_id: is required` or `value: not a protobuf Event: …`;
- `aisle.dlq.topic`, `aisle.dlq.partition`, `aisle.dlq.offset`: where the record was read;
- `aisle.dlq.timestamp`: the original record's timestamp (ms).

What is dead-lettered: a null or empty value, a value over `Settings.max_event_bytes`, a value that
is neither a protobuf `Event` nor its JSON form, an event that `validation.validate_event` refuses, and
a record whose key is not the event's `user_id` (the key decides the partition, and so which worker
folds the user). Events with `ts_ms` 0 take the record's timestamp, which a redelivery keeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from feature_worker.codec import decode
from feature_worker.errors import InvalidArgument
from feature_worker.privacy.sealing import is_sealed
from feature_worker.validation import validate_event
from protos.aisle.v1 import events_pb2

log = logging.getLogger(__name__)

REASON = "aisle.dlq.reason"
_MAX_REASON = 1000


@dataclass(slots=True)
class DeadLetter:
    record: ConsumerRecord[bytes, bytes]
    reason: str

    def headers(self) -> list[tuple[str, bytes]]:
        r = self.record
        origin = [
            (REASON, self.reason[:_MAX_REASON].encode()),
            ("aisle.dlq.topic", r.topic.encode()),
            ("aisle.dlq.partition", str(r.partition).encode()),
            ("aisle.dlq.offset", str(r.offset).encode()),
            ("aisle.dlq.timestamp", str(r.timestamp).encode()),
        ]
        return [*(r.headers or ()), *origin]


def _problems_text(problems: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{field}: {reason}" for field, reason in problems)


#: Opens a sealed event value for a user id: the event bytes, or None when it cannot be (erased customer).
Opener = Callable[[str, bytes], bytes | None]


def events_of(
    batches: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
    max_bytes: int,
    opener: Opener | None = None,
) -> tuple[list[events_pb2.Event], list[DeadLetter]]:
    """The batch's foldable events, in partition order, and its dead letters (see `record_events`)."""
    pairs, dead = record_events(batches, max_bytes, opener)
    return [event for _, event in pairs], dead


def record_events(
    batches: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
    max_bytes: int,
    opener: Opener | None = None,
) -> tuple[list[tuple[ConsumerRecord[bytes, bytes], events_pb2.Event]], list[DeadLetter]]:
    """The batch's foldable events with their records, in partition order, and its dead letters.

    Sealed values (`feature_worker.privacy.events`) are opened with `opener` (with the record's key as the
    user id); those it cannot open belong to erased customers and are skipped, neither folded nor
    dead-lettered. Without an opener (encryption off) a sealed value is a dead letter.
    """
    now = time.time_ns() // 1_000_000
    pairs: list[tuple[ConsumerRecord[bytes, bytes], events_pb2.Event]] = []
    dead: list[DeadLetter] = []
    for records in batches.values():
        for record in records:
            value = record.value
            if not value:
                dead.append(DeadLetter(record, "value: is empty"))
                continue
            if len(value) > max_bytes:
                dead.append(
                    DeadLetter(record, f"value: is {len(value)} bytes; the limit is {max_bytes} bytes")
                )
                continue
            if is_sealed(value):
                if opener is None:
                    dead.append(DeadLetter(record, "value: sealed, but this consumer has no master key"))
                    continue
                opened = opener((record.key or b"").decode("utf-8", "replace"), value)
                if opened is None:
                    continue  # crypto-shredded: its customer was erased
                value = opened
            try:
                event = decode(value, events_pb2.Event)
            except InvalidArgument as exc:
                dead.append(DeadLetter(record, _problems_text(exc.violations)))
                continue
            problems = validate_event(event, now)
            if problems:
                dead.append(DeadLetter(record, _problems_text(problems)))
                continue
            if record.key != event.user_id.encode():
                dead.append(DeadLetter(record, "key: must be the event's user_id (it decides the partition)"))
                continue
            if event.ts_ms == 0:
                event.ts_ms = record.timestamp
            pairs.append((record, event))
    return pairs, dead


async def produce_dead_letters(producer: AIOKafkaProducer, topic: str, dead: Sequence[DeadLetter]) -> None:
    """Write the dead letters and wait for the broker; while it cannot be reached, try again."""
    backoff = 0.1
    while True:
        try:
            futures = [
                await producer.send(topic, value=d.record.value, key=d.record.key, headers=d.headers())
                for d in dead
            ]
            await asyncio.gather(*futures)
            for d in dead:
                log.warning(
                    "dead-lettered %s/%d/%d: %s",
                    d.record.topic,
                    d.record.partition,
                    d.record.offset,
                    d.reason[:200],
                )
            return
        except KafkaError as exc:
            log.warning("cannot write dead letters (%r); retrying in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
