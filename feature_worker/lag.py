"""How far a consumer group is behind: end offsets of the event topic minus the group's committed offsets.

The worker commits offsets only after the store holds the batch, so a lag of zero means "every event
the broker had acknowledged when this was asked is folded into the store". Tests wait on that instead
of sleeping (`wait_caught_up`), and `python -m feature_worker.lag` prints it for operators.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


class LagProbe:
    """A reusable pair of clients that reads end offsets and a group's committed offsets."""

    def __init__(self, bootstrap: str, group_id: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topic = topic
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect (inside the event loop that will use the probe)."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self._consumer.start()
        await self._admin.start()
        deadline = time.monotonic() + 30
        while not (partitions := self._consumer.partitions_for_topic(self.topic)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic} has no partitions")
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]

    async def end_offsets(self) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(self._partitions)
        return ends

    async def committed(self) -> dict[TopicPartition, int]:
        offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=self._partitions)
        return {tp: max(0, meta.offset) for tp, meta in offsets.items()}

    async def lag(self) -> dict[int, int]:
        """Records not yet committed by the group, per partition."""
        ends = await self.end_offsets()
        committed = await self.committed()
        return {tp.partition: max(0, end - committed.get(tp, 0)) for tp, end in ends.items()}

    async def wait_caught_up(self, timeout_s: float = 60.0, poll_s: float = 0.02) -> None:
        """Return once the group has committed everything the topic held when this was called."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ends = await self.end_offsets()
                break
            except KafkaError:  # a restarting broker: ask again until the deadline
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        while True:
            try:
                committed = await self.committed()
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            behind = {
                tp.partition: end - committed.get(tp, 0)
                for tp, end in ends.items()
                if committed.get(tp, 0) < end
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"group {self.group_id} still behind on {self.topic} after {timeout_s}s: {behind}"
                )
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()


async def _print_lag(bootstrap: str, group_id: str, topic: str) -> None:
    probe = LagProbe(bootstrap, group_id, topic)
    await probe.start()
    try:
        lags = await probe.lag()
    finally:
        await probe.close()
    for partition, lag in sorted(lags.items()):
        print(f"{topic}[{partition}] lag {lag}")
    print(f"total lag {sum(lags.values())}")


def main(argv: list[str] | None = None) -> None:
    """`python -m feature_worker.lag` with the worker's settings: print the group's lag per partition."""
    from feature_worker.config import Settings

    parser = argparse.ArgumentParser(prog="python -m feature_worker.lag", description=main.__doc__)
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings()  # pydantic-settings reads the environment
    if not settings.kafka_bootstrap:
        sys.exit("AISLE_KAFKA_BOOTSTRAP is not set")
    asyncio.run(_print_lag(settings.kafka_bootstrap, settings.group_id, settings.topics.events))


if __name__ == "__main__":
    main()
