"""CPU per event of the feature worker's own work, without Kafka or Redis: decode, validate, fold, serialize.

    python -m loadtest.kafka_worker_cpu --shop DIR [--events 200000] [--batch-max 2000] [--profile]

The shop's events go through the code the worker runs on each batch (`dead_letters.events_of`, the
store's `load_users`, `apply.fold_batch`, the store's `commit` argument building), with a Redis stand-in
that keeps the stored bytes in a dict and answers at once. Figures are `time.process_time` per event,
so they barely move with the machine's other load (unlike wall-clock throughput): use them to compare
changes to the worker's Python code. Kafka fetching, the Redis client and the Lua scripts are not in it
(`loadtest.kafka_throughput` measures the whole).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from pathlib import Path
from typing import Any

import redis
from aiokafka import ConsumerRecord, TopicPartition

from feature_worker.apply import fold_batch
from feature_worker.catalog import Catalog
from feature_worker.dead_letters import events_of
from feature_worker.stores.redis import RedisFeatureStore
from trainer.data.generated import read_events, read_items


class _FakeRedis:
    """What `RedisFeatureStore` calls on its client, over a dict; commits store the users' bytes."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.arg_bytes = 0

    def register_script(self, script: str) -> Any:
        async def run(args: list[Any]) -> int:
            data = self.data
            self.arg_bytes += sum(len(a) for a in args)
            for i in range(_FIRST_USER_ARG[0], len(args), 4):
                data[args[i]] = args[i + 1]
                data[args[i + 2]] = args[i + 3]
            return 1

        return run

    async def mget(self, names: list[str]) -> list[bytes | None]:
        data = self.data
        return [data.get(n) for n in names]


#: Index of the first user argument in a commit call (after the item-delta arguments).
_FIRST_USER_ARG = [1]


def records(
    shop: Path, limit: int, batch_max: int, partitions: int = 4
) -> list[dict[TopicPartition, list[Any]]]:
    """The shop's events as fetched batches of consumer records, keyed by user, spread over partitions."""
    tps = [TopicPartition("events", p) for p in range(partitions)]
    batches: list[dict[TopicPartition, list[Any]]] = []
    current: dict[TopicPartition, list[Any]] = {}
    n = 0
    for offset, event in enumerate(read_events(shop)):
        if offset >= limit:
            break
        key = event.user_id.encode()
        tp = tps[hash(key) % partitions]
        record = ConsumerRecord(
            tp.topic,
            tp.partition,
            offset,
            event.ts_ms,
            0,
            key,
            event.SerializeToString(),
            None,
            len(key),
            0,
            (),
        )
        current.setdefault(tp, []).append(record)
        n += 1
        if n == batch_max:
            batches.append(current)
            current, n = {}, 0
    if current:
        batches.append(current)
    return batches


async def run(
    batches: list[dict[TopicPartition, list[Any]]], catalog: Catalog, store: RedisFeatureStore
) -> dict[str, float]:
    clock = time.process_time
    spent = {"decode+validate": 0.0, "load": 0.0, "fold": 0.0, "commit": 0.0}
    for batch in batches:
        t0 = clock()
        events, _ = events_of(batch, 64 * 1024)
        t1 = clock()
        users = await store.load_users({e.user_id for e in events})
        t2 = clock()
        changed, deltas, _ = fold_batch(users, catalog, events, store.config)
        t3 = clock()
        await store.commit(changed, deltas)
        t4 = clock()
        spent["decode+validate"] += t1 - t0
        spent["load"] += t2 - t1
        spent["fold"] += t3 - t2
        spent["commit"] += t4 - t3
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.kafka_worker_cpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-max", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="print where the time went (cProfile)")
    parser.add_argument(
        "--redis-url",
        help="commit to this Redis (a database of its own: it is flushed) and "
        "report its CPU per event too; default: a stand-in in this process",
    )
    args = parser.parse_args()
    catalog = Catalog()
    catalog.upsert_many(read_items(args.shop))
    batches = records(args.shop, args.events, args.batch_max)
    total = sum(len(rs) for b in batches for rs in b.values())
    fake = _FakeRedis()
    store = RedisFeatureStore(fake)  # type: ignore[arg-type]
    server = None
    if args.redis_url:
        server = redis.Redis.from_url(args.redis_url)
        server.flushdb()
        store = RedisFeatureStore.from_url(args.redis_url)
        redis_cpu = _redis_cpu(server)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    started = time.process_time()
    spent = asyncio.run(run(batches, catalog, store))
    took = time.process_time() - started
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    parts = ", ".join(f"{k} {v / total * 1e6:.2f}" for k, v in spent.items())
    print(
        f"{total:,} events, batch_max {args.batch_max}: {took / total * 1e6:.2f} us CPU/event ({parts})"
        + (f"; commit arguments {fake.arg_bytes / total:.0f} B/event" if server is None else "")
    )
    if server is not None:
        print(f"Redis: {(_redis_cpu(server) - redis_cpu) / total * 1e6:.2f} us CPU/event")


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


if __name__ == "__main__":
    main()
