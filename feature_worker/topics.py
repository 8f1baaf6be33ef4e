"""Aisle's Kafka topics: names, partitions, configs, and creating them at start-up.

- `<prefix>.events`: one `aisle.v1.Event` per record, keyed by user id (so one user's events stay in
  order on one partition); the value is the protobuf encoding, or the protobuf JSON form of `Event`
  (a UTF-8 object starting with `{`) for producers without the generated stubs (`codec`).
- `<prefix>.items` / `<prefix>.users`: compacted tables keyed by item / user id, values `aisle.v1.Item`
  / `aisle.v1.User` (protobuf or JSON), a null value (tombstone) deletes.
- `<prefix>.dlq`: dead letters: the original key and value, with the reason and the origin in headers
  (`dead_letters`).

The prefix is `aisle` in production (`Settings.topic_prefix`); tests use prefixes of their own.
Automatic topic creation stays off on the broker: the server and the worker create these
idempotently when they start (`create_topics`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

#: Kafka's error code for "topic already exists", which `create_topics` takes as success.
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partition count and topic-level configs."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """The names of Aisle's topics under one prefix."""

    prefix: str = "aisle"
    #: Partitions of the event topic: the most feature workers that can share the stream.
    event_partitions: int = 4

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def items(self) -> str:
        return f"{self.prefix}.items"

    @property
    def users(self) -> str:
        return f"{self.prefix}.users"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    def specs(self, replication_factor: int = 1) -> tuple[TopicSpec, ...]:
        compacted = {"cleanup.policy": "compact"}
        return (
            TopicSpec(self.events, self.event_partitions),
            TopicSpec(self.items, 1, compacted),
            TopicSpec(self.users, 1, compacted),
            TopicSpec(self.dlq, 1),
        )


#: The production topics, in one place. Events are keyed by user id, so 4 partitions keep each user's
#: events in order while letting up to 4 workers share the stream; the catalogue topics are compacted
#: tables keyed by id.
AISLE_TOPICS: tuple[TopicSpec, ...] = Topics().specs()


async def create_topics(
    bootstrap: str,
    topics: Iterable[TopicSpec] = AISLE_TOPICS,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    warm_group_coordinator: bool = False,
) -> None:
    """Create `topics` unless they exist, and wait until each partition has a leader.

    Idempotent: a topic that already exists is left as it is, even if its partitions or configs differ.
    With `warm_group_coordinator`, also check that the group coordinator answers and has loaded the
    committed offsets (on a new broker this creates `__consumer_offsets` now rather than in the first
    consumer). Raises the client's error if the broker refuses and `TimeoutError` after `timeout`
    seconds; callers that wait for a starting broker retry.
    """
    specs = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(timeout):
            await _create_and_wait(admin, specs, replication_factor, warm_group_coordinator)
    finally:
        await admin.close()


async def _create_and_wait(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], replication_factor: int, warm_group_coordinator: bool
) -> None:
    await admin.start()
    if specs:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, replication_factor, topic_configs=dict(s.config)) for s in specs]
        )
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise for_code(code)(f"creating topic {name}")
    while True:
        described = await admin.describe_topics([s.name for s in specs]) if specs else []
        if all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            break
        await asyncio.sleep(0.1)
    if warm_group_coordinator:
        await admin.find_coordinator("aisle-services-warmup")
        # Raises COORDINATOR_LOAD_IN_PROGRESS until the broker has loaded `__consumer_offsets`, which after
        # a restart takes a moment longer than electing the coordinator.
        await admin.list_consumer_groups()
