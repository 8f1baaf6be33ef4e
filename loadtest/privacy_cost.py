"""What encryption at rest and erasure cost: the Recommend read with sealed features, and EraseUser.

    python -m loadtest.privacy_cost --shop DIR [--users 2000] [--rounds 5] [--erasures 200]

1. Read path (Kafka + Redis mode). The shop's events are folded into two Redis databases, one in clear and one
   sealed (per-customer AES-256-GCM keys, as the servers write them). For `--users` customers the store read
   of one Recommend (`RedisFeatureStore.read_request`: one Lua script call for the features, the wrapped key and
   the co-visitation neighbours) is timed on both, alternating blocks of calls so that the machine's noise
   falls on both alike; the difference is the added cost per Recommend. Reported for warm reads (the seeds of
   the customer's last read still hold: one script call, the key cached) and cold ones (a fresh process: the
   key is unwrapped and the seeds read in a second call). The pure CPU of opening one customer's features is
   timed apart.
2. Erasure. An embedded server is loaded with the shop's customers (records and events), then `--erasures`
   customers are erased one by one over gRPC: the latency of each EraseUser call (key line overwritten and
   fsynced, journal record, audit line fsynced). Then the same in Kafka + Redis mode (`kafka_erasures`).

Uses `AISLE_REDIS_URL` (databases 11, 12 and 13 are flushed) and `AISLE_KAFKA_BOOTSTRAP`, or starts its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis

from clients.client import AisleClient, ClientOptions
from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.privacy.keystores.redis import RedisKeyStore
from feature_worker.privacy.sealing import FEATURES, MasterKey, open_sealed
from feature_worker.privacy.vault import Vault
from feature_worker.state import UserState
from feature_worker.stores.redis import RedisFeatureStore
from loadtest.harness.children import with_master_key
from loadtest.harness.server import ServerProcess
from loadtest.shops import load_shop
from loadtest.stats import format_ms, summarize_ms
from protos.aisle.v1 import events_pb2, users_pb2
from trainer.data.generated import read_events, read_items, read_users


def master_key() -> MasterKey:
    return MasterKey.load(Path(with_master_key({})["AISLE_MASTER_KEY_FILE"]))


async def fresh_db(base: str, db: int) -> str:
    url = f"{base.rsplit('/', 1)[0]}/{db}"
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


def sealed_store(url: str) -> RedisFeatureStore:
    store = RedisFeatureStore.from_url(url)
    store.vault = Vault(master_key(), RedisKeyStore(store.client))
    return store


async def timed_reads(store: RedisFeatureStore, users: list[str]) -> list[float]:
    out = []
    for user in users:
        started = time.perf_counter()
        await store.read_request(user, ())
        out.append(time.perf_counter() - started)
    return out


async def paired_reads(
    clear: RedisFeatureStore, sealed: RedisFeatureStore, users: list[str], rounds: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Each customer read from both stores back to back (which goes first alternates): wall and CPU seconds."""
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for n, user in enumerate(users):
            for is_sealed in (False, True) if (n + r) % 2 else (True, False):
                store = sealed if is_sealed else clear
                c0, w0 = time.thread_time(), time.perf_counter()
                await store.read_request(user, ())
                wall[is_sealed].append(time.perf_counter() - w0)
                cpu[is_sealed].append(time.thread_time() - c0)
    return wall[False], wall[True], cpu[False], cpu[True]


async def read_path(shop: Path, redis_url: str, n_users: int, rounds: int) -> None:
    catalog = Catalog()
    catalog.upsert_many(read_items(shop))
    events = list(read_events(shop))
    clear_url, sealed_url = await fresh_db(redis_url, 11), await fresh_db(redis_url, 12)
    clear, sealed = RedisFeatureStore.from_url(clear_url), sealed_store(sealed_url)
    started = time.perf_counter()
    for start in range(0, len(events), 2000):
        batch = events[start : start + 2000]
        await apply_events(clear, catalog, batch)
        await apply_events(sealed, catalog, batch)
    print(f"{len(events):,} events folded into both databases in {time.perf_counter() - started:.1f} s")
    users = sorted({e.user_id for e in events})
    random.Random(1).shuffle(users)
    users = users[:n_users]

    # Pure CPU: opening one customer's sealed features (the key cached), beside decoding them.
    assert sealed.vault is not None
    # Every sampled customer's features and wrapped key were just written (bytes: the client does not decode).
    blobs = cast(list[bytes], await sealed.client.mget([f"u1{{{u}}}" for u in users]))
    wrapped = cast(list[bytes], await sealed.client.mget([f"x1{{{u}}}" for u in users]))
    plain = [
        open_sealed(sealed.vault.cipher(u, w), u, FEATURES, b)
        for u, w, b in zip(users, wrapped, blobs, strict=True)
    ]
    t0 = time.perf_counter()
    for u, w, b in zip(users, wrapped, blobs, strict=True):
        UserState.from_bytes(open_sealed(sealed.vault.cipher(u, w), u, FEATURES, b))
    t1 = time.perf_counter()
    for p in plain:
        UserState.from_bytes(p)
    t2 = time.perf_counter()
    size = statistics.mean(len(b) for b in blobs)
    print(
        f"open + decode {(t1 - t0) / len(users) * 1e6:.1f} µs vs decode {(t2 - t1) / len(users) * 1e6:.1f} µs "
        f"per customer (sealed features {size:.0f} bytes on average)"
    )

    # Cold: a fresh process (no cached keys, no seed hints): unwrap + a second script call.
    cold_store = sealed_store(sealed_url)
    cold = await timed_reads(cold_store, users)
    print(f"cold sealed reads: {format_ms(summarize_ms(cold))}; second calls {cold_store.second_reads}")
    await cold_store.close()

    # Warm: each customer read from both stores back to back.
    await timed_reads(sealed, users)  # warm the hints and the key cache
    calls_before = sealed.second_reads
    clear_t, sealed_t, clear_cpu, sealed_cpu = await paired_reads(clear, sealed, users, rounds)
    c, s = summarize_ms(clear_t), summarize_ms(sealed_t)
    diffs = [b - a for a, b in zip(clear_t, sealed_t, strict=True)]
    print(f"clear  reads: {format_ms(c)}; client CPU {statistics.mean(clear_cpu) * 1e6:.1f} µs/read")
    print(
        f"sealed reads: {format_ms(s)}; client CPU {statistics.mean(sealed_cpu) * 1e6:.1f} µs/read; "
        f"second calls {sealed.second_reads - calls_before}"
    )
    print(
        f"added per Recommend read: median of paired differences {statistics.median(diffs) * 1e6:+.1f} µs wall, "
        f"{(statistics.mean(sealed_cpu) - statistics.mean(clear_cpu)) * 1e6:+.1f} µs client CPU"
    )
    await clear.close()
    await sealed.close()


def erasures(shop: Path, n: int, workdir: Path) -> None:
    server = ServerProcess(workdir / "server").start()
    try:
        started = time.perf_counter()
        customers = [u.user_id for u in read_users(shop)]

        load_shop(server.target, shop, progress=False)
        with AisleClient(ClientOptions(target=server.target, write_timeout_s=60)) as client:
            print(f"loaded {len(customers):,} customers in {time.perf_counter() - started:.1f} s")
            random.Random(2).shuffle(customers)
            latencies = []
            for user in customers[:n]:
                t0 = time.perf_counter()
                client.erase_user(user)
                latencies.append(time.perf_counter() - t0)
            keys = sum(1 for line in (server.data_dir / "keys.txt").read_text().splitlines() if line.strip())
            print(
                f"EraseUser (embedded, {keys:,} keys left in the key file): {format_ms(summarize_ms(latencies))}"
            )
    finally:
        server.stop()


def kafka_erasures(redis_url: str, n: int, workdir: Path) -> None:
    """EraseUser in Kafka + Redis mode: key and features deleted in Redis, the users-topic tombstone produced and
    read back by the server, the audit line fsynced. Customers: a record and five events each."""
    bootstrap = os.environ.get("AISLE_KAFKA_BOOTSTRAP", "")
    broker = None
    if not bootstrap:
        from loadtest.harness.services.kafka import KafkaService

        broker = KafkaService(workdir / "kafka", die_with_parent=True)
        broker.start()
        bootstrap = broker.bootstrap
    url = asyncio.run(fresh_db(redis_url, 13))
    env = {
        "AISLE_KAFKA_BOOTSTRAP": bootstrap,
        "AISLE_REDIS_URL": url,
        "AISLE_TOPIC_PREFIX": f"privacybench{int(time.time())}",
    }
    server = ServerProcess(workdir / "kafka-server", env=env).start()
    try:
        with AisleClient(ClientOptions(target=server.target, write_timeout_s=60)) as client:
            users = [f"kb-u{i}" for i in range(n)]
            for user in users:
                client.upsert_user(users_pb2.User(user_id=user, attributes={"tier": "gold"}))
                client.track(
                    [
                        events_pb2.Event(
                            event_id=f"{user}-e{j}", type=events_pb2.VIEW, user_id=user, item_id=f"i{j}"
                        )
                        for j in range(5)
                    ]
                )
            latencies = []
            for user in users:
                t0 = time.perf_counter()
                client.erase_user(user)
                latencies.append(time.perf_counter() - t0)
            print(f"EraseUser (Kafka + Redis): {format_ms(summarize_ms(latencies))}")
    finally:
        server.stop()
        if broker is not None:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.privacy_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--erasures", type=int, default=200)
    args = parser.parse_args()
    redis_url = os.environ.get("AISLE_REDIS_URL", "")
    service = None
    with tempfile.TemporaryDirectory(prefix="aisle-privacy-bench-") as tmp:
        if not redis_url:
            from loadtest.harness.services.redis import RedisService

            service = RedisService(Path(tmp) / "redis")
            service.start()
            redis_url = service.url
        try:
            asyncio.run(read_path(args.shop, redis_url, args.users, args.rounds))
            if args.erasures:
                erasures(args.shop, args.erasures, Path(tmp))
                kafka_erasures(redis_url, args.erasures, Path(tmp))
        finally:
            if service is not None:
                service.stop()


if __name__ == "__main__":
    main()
