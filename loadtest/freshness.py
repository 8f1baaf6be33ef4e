"""Freshness: from a producer's send to the event being visible in `Recommend`, at a steady rate.

    make services
    python -m loadtest.freshness --shop DIR [--events 10000] [--rate 200]

Starts a feature worker and a Kafka-mode server (topics, group and Redis database of the run's own),
loads the shop's catalog and a warm-up of its events (so popularity and category lists exist), then
sends `--events` probe events at `--rate` per second straight into Kafka, as any producer would. Each
probe is a VIEW of a popular item X by a user never seen before; it is visible once `Recommend` for
that user answers with a reason that names X (`similar_to:X`, `same_brand_as:X`, `co_viewed_with:X`),
which only the user's own folded history can cause. Each probe polls `GetProfile` (the same store read
as Recommend, and cheaper, so the polling does not load the server) every `--poll-ms` from its send
on; once the profile shows the event, a `Recommend` call must show it too, and the figure is the time
from just before `send` to that Recommend answer. So it includes the producer's acknowledgement, the
worker's fetch, fold and Redis commit, and one GetProfile plus one Recommend call (at most `--poll-ms`
of polling granularity is added). `--breakdown` also polls Redis itself, to show how much of it is the
worker's (send -> the user's features are in Redis) and how much the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from feature_worker import keys
from feature_worker.lag import LagProbe
from feature_worker.topics import Topics
from loadtest.harness.server import ServerProcess
from loadtest.harness.worker import WorkerProcess
from loadtest.stats import format_ms, summarize_ms
from protos.aisle.v1 import (
    events_pb2,
    recommendations_pb2,
    recommendations_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from trainer.data.generated import read_events, read_items


async def send_all(producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    futures = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*futures)


@dataclass
class Probes:
    """What every probe shares, and the per-stage times it records (seconds from just before send)."""

    stub: recommendations_pb2_grpc.RecommendationServiceAsyncStub
    profiles: users_pb2_grpc.UserServiceAsyncStub
    producer: AIOKafkaProducer
    topic: str
    item: str
    poll_s: float
    redis: aioredis.Redis | None = None  # with --breakdown: also poll Redis itself
    acked: list[float] = field(default_factory=list)
    in_redis: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)

    async def once(self, timeout_s: float = 30.0) -> float:
        user = f"fresh-{uuid.uuid4().hex[:12]}"
        event = events_pb2.Event(
            event_id=uuid.uuid4().hex, type=events_pb2.VIEW, user_id=user, item_id=self.item
        )
        request = recommendations_pb2.RecommendRequest(user_id=user, k=10, explain=True)
        profile_request = users_pb2.GetProfileRequest(user_id=user)
        started = time.perf_counter()
        ack = await self.producer.send(self.topic, event.SerializeToString(), key=user.encode())
        ack.add_done_callback(lambda _: self.acked.append(time.perf_counter() - started))
        seen_in_redis = self.redis is None
        while True:
            if not seen_in_redis and self.redis is not None and await self.redis.exists(keys.user(user)):
                self.in_redis.append(time.perf_counter() - started)
                seen_in_redis = True
            if seen_in_redis:
                # GetProfile is the cheaper poll (the same one-round-trip store read as Recommend); once it
                # shows the event, the Recommend answer that shows it ends the measurement.
                profile = await self.profiles.GetProfile(profile_request, timeout=5)
                if profile.events_applied:
                    answer = await self.stub.Recommend(request, timeout=5)
                    if any(r.endswith(f":{self.item}") for scored in answer.items for r in scored.reasons):
                        return time.perf_counter() - started
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"event of {user} not visible after {timeout_s}s")
            await asyncio.sleep(self.poll_s)


async def measure(
    args: argparse.Namespace, bootstrap: str, topics: Topics, target: str, item: str, redis_url: str
) -> Probes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            probes = Probes(
                recommendations_pb2_grpc.RecommendationServiceStub(channel),
                users_pb2_grpc.UserServiceStub(channel),
                producer,
                topics.events,
                item,
                args.poll_ms / 1000,
                aioredis.Redis.from_url(redis_url) if args.breakdown else None,
            )
            for _ in range(20):  # warm the channel and the server's code paths
                await probes.once()
            probes.acked.clear()
            probes.in_redis.clear()
            tasks: list[asyncio.Task[float]] = []
            started = time.perf_counter()
            for n in range(args.events):
                ahead = started + n / args.rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                tasks.append(asyncio.create_task(probes.once()))
            probes.samples = list(await asyncio.gather(*tasks))
            took = time.perf_counter() - started
            print(f"sent {args.events:,} probes in {took:.1f} s ({args.events / took:.0f}/s)")
            if probes.redis is not None:
                await probes.redis.aclose()
    finally:
        await producer.stop()
    return probes


async def warm_up(bootstrap: str, topics: Topics, shop: Path, events: int, group: str) -> str:
    """Catalog and the first `events` events of the shop; returns the most viewed item of the warm-up."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    views: collections.Counter[str] = collections.Counter()
    try:
        await send_all(
            producer, topics.items, [(i.item_id.encode(), i.SerializeToString()) for i in read_items(shop)]
        )
        records: list[tuple[bytes, bytes]] = []
        for event in read_events(shop):
            if len(records) >= events:
                break
            records.append((event.user_id.encode(), event.SerializeToString()))
            if event.type == events_pb2.VIEW:
                views[event.item_id] += 1
        await send_all(producer, topics.events, records)
    finally:
        await producer.stop()
    probe = LagProbe(bootstrap, group, topics.events)
    await probe.start()
    try:
        await probe.wait_caught_up(300)
    finally:
        await probe.close()
    return views.most_common(1)[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.freshness", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="probe events per second")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--warm-up", type=int, default=50_000, help="shop events loaded before measuring")
    parser.add_argument("--redis-db", type=int, default=12, help="database of the run; flushed first")
    parser.add_argument(
        "--lists-refresh-s", type=float, default=1.0, help="the server's popular/trending refresh"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also poll Redis directly, to tell the worker's part from the server's",
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("AISLE_KAFKA_BOOTSTRAP", "")
    base_url = os.environ.get("AISLE_REDIS_URL", "")
    if not bootstrap or not base_url:
        sys.exit("set AISLE_KAFKA_BOOTSTRAP and AISLE_REDIS_URL (make services; source .services.env)")
    redis_url = f"{base_url.rsplit('/', 1)[0]}/{args.redis_db}"
    with redis.Redis.from_url(redis_url) as r:
        r.flushdb()
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"fresh{tag}")
    group = f"fresh-{tag}"
    env = {
        "AISLE_KAFKA_BOOTSTRAP": bootstrap,
        "AISLE_REDIS_URL": redis_url,
        "AISLE_TOPIC_PREFIX": topics.prefix,
        "AISLE_GROUP_ID": group,
        "AISLE_LOG_EVERY_S": "10",
    }
    workdir = Path(tempfile.mkdtemp(prefix="aisle-fresh-"))
    # Popular/trending lists rebuild every second in the background, as in production.
    server = ServerProcess(workdir / "server", env=env, args=["--lists-refresh-s", str(args.lists_refresh_s)])
    worker = WorkerProcess(workdir / "worker", env=env)
    try:
        server.start()
        worker.start()
        item = asyncio.run(warm_up(bootstrap, topics, args.shop, args.warm_up, group))
        time.sleep(2.5)  # let the server's background refresh build the lists from the warm-up
        print(
            f"warm-up: {args.warm_up:,} events; probes view {item}; {args.events:,} probes at {args.rate:.0f}/s"
        )
        probes = asyncio.run(measure(args, bootstrap, topics, server.target, item, redis_url))
        print(f"freshness (send -> visible in Recommend): {format_ms(summarize_ms(probes.samples))}")
        print(f"  of which: send -> broker ack:        {format_ms(summarize_ms(probes.acked))}")
        if probes.in_redis:
            print(f"            send -> in Redis (worker): {format_ms(summarize_ms(probes.in_redis))}")
    finally:
        worker.stop()
        server.stop()
        print(f"logs in {workdir}")


if __name__ == "__main__":
    main()
