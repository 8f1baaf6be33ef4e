"""Redis memory per user: the generated shop's histories folded and written in the production layout.

    make services
    python -m loadtest.redis_memory --shop DIR [--copies 10] [--redis-db 13]

"Typical histories" are the generated shop's: every user's thirty days of events (about 12 per user
on average, median 8, a long tail of heavy users) folded by the same fold as production. The users
are written `--copies` times under different ids (`u1`, `u1#1`, …), so 100,000 generated users make
1,000,000 Redis users with the shop's distribution of histories. Memory is Redis's `used_memory`
before and after (keys, values, TTLs and Redis's own overhead; not the allocator's free pages):

- with applied ids: every user was active in the last `applied_ttl` (one day), so both keys exist;
- steady state: the applied-id keys have expired (users not active in the last day): the figure
  that a shop with a million customers, most of them not active today, lives with.
Item-level keys (popularity, trending, co-visitation) are measured apart: they grow with the
catalog, not with the customers. `--sealed` writes the features as encryption at rest does (sealed with
per-customer keys, each key wrapped in `x1{<user>}`), with the development master key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import redis

from feature_worker import keys
from feature_worker.catalog import Catalog
from feature_worker.fold import ItemDeltas, fold
from feature_worker.state import UserState
from feature_worker.stores.redis import RedisFeatureStore
from trainer.data.generated import read_events, read_items

GIB = 1024**3
CHUNK = 2000


def fold_shop(shop: Path) -> tuple[dict[str, UserState], ItemDeltas, int]:
    catalog = Catalog()
    catalog.upsert_many(read_items(shop))
    users: dict[str, UserState] = {}
    deltas = ItemDeltas()
    n = 0
    for event in read_events(shop):
        state = users.get(event.user_id)
        if state is None:
            state = users[event.user_id] = UserState()
        fold(state, event, catalog, deltas)
        n += 1
    return users, deltas, n


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def write_users(store: RedisFeatureStore, users: dict[str, UserState], copies: int) -> int:
    written = 0
    items = list(users.items())
    for copy in range(copies):
        suffix = f"#{copy}" if copy else ""
        for start in range(0, len(items), CHUNK):
            chunk = {f"{uid}{suffix}": state for uid, state in items[start : start + CHUNK]}
            if store.vault is not None:
                await store.vault.keys(list(chunk), create=True)  # as `load_users` does for new users
            await store.commit(chunk, ItemDeltas())
            written += len(chunk)
    return written


async def run(args: argparse.Namespace) -> None:
    base_url = args.redis_url or os.environ.get("AISLE_REDIS_URL", "")
    if not base_url:
        sys.exit("set AISLE_REDIS_URL (make services; source .services.env)")
    url = f"{base_url.rsplit('/', 1)[0]}/{args.redis_db}"
    started = time.perf_counter()
    users, deltas, events = fold_shop(args.shop)
    values = [len(s.to_bytes()) for s in users.values()]
    applied = [len(s.applied_to_bytes()) for s in users.values()]
    print(
        f"folded {events:,} events of {len(users):,} users in {time.perf_counter() - started:.0f} s "
        f"({events / len(users):.1f} events per user); stored features {sum(values) / len(values):.0f} B "
        f"mean, {sorted(values)[len(values) // 2]} B median; applied ids {sum(applied) / len(applied):.0f} B mean"
    )
    client = redis.Redis.from_url(url)
    store = RedisFeatureStore.from_url(url)
    if args.sealed:
        from feature_worker.privacy.keystores.redis import RedisKeyStore
        from feature_worker.privacy.sealing import MasterKey
        from feature_worker.privacy.vault import Vault
        from loadtest.harness.children import with_master_key

        master = MasterKey.load(Path(with_master_key({})["AISLE_MASTER_KEY_FILE"]))
        store.vault = Vault(master, RedisKeyStore(store.client))
    try:
        client.flushdb()
        before = used(client)
        n = await write_users(store, users, args.copies)
        with_ids = used(client) - before
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{keys.APPLIED_PREFIX}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
        steady = used(client) - before
        print(
            f"{n:,} users with applied ids:  {with_ids / n:.0f} B/user = {with_ids / n * 1e6 / GIB:.3f} GiB per 1,000,000"
        )
        print(
            f"{n:,} users, steady state:     {steady / n:.0f} B/user = {steady / n * 1e6 / GIB:.3f} GiB per 1,000,000"
            f" ({deleted:,} applied-id keys expired)"
        )
        before_items = used(client)
        await store.commit({}, deltas)
        items = used(client) - before_items
        covis = sum(1 for _ in client.scan_iter(match=f"{keys.COVIS_PREFIX}*", count=10_000))
        print(
            f"item-level keys: {items / 2**20:.1f} MiB ({covis:,} co-visitation sets, popularity, trending)"
        )
    finally:
        await store.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.redis_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--copies", type=int, default=10, help="write every user this many times")
    parser.add_argument("--redis-url", help="default: $AISLE_REDIS_URL (the database number is replaced)")
    parser.add_argument("--redis-db", type=int, default=13, help="database of the run; flushed first")
    parser.add_argument(
        "--sealed", action="store_true", help="encryption at rest: sealed features, wrapped keys"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
