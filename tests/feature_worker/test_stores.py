"""One contract for every feature store: the in-process store and Redis answer alike."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from feature_worker import keys
from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.stores.base import FeatureStore
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.stores.redis import RedisFeatureStore
from protos.aisle.v1 import events_pb2
from tests.sealing import sealed_store
from tests.shop import BASE_TS, event, item, view

MIN = 60_000


@pytest.fixture
def catalog() -> Catalog:
    c = Catalog()
    c.upsert_many(item(f"i{n}", category=f"d{n % 3}/c{n % 6}", brand=f"b{n % 4}") for n in range(30))
    c.upsert_many([item("a", category="beauty/skin/cream", brand="acme"), item("b", category="beauty/skin/serum")])
    return c


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration),
                        pytest.param("redis-sealed", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[FeatureStore]:
    """Every backend; `redis-sealed` is Redis with encryption at rest (features sealed per customer)."""
    if request.param == "memory":
        yield MemoryFeatureStore()
        return
    url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/4"
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    redis_store = sealed_store(url) if request.param == "redis-sealed" else RedisFeatureStore.from_url(url)
    yield redis_store
    await redis_store.close()


async def test_batches_apply_idempotently(store: FeatureStore, catalog: Catalog) -> None:
    batch = [view("u1", "a", BASE_TS), view("u1", "b", BASE_TS + MIN), view("u2", "a", BASE_TS + 2 * MIN)]
    first = await apply_events(store, catalog, batch)
    again = await apply_events(store, catalog, batch)
    assert (first.applied, first.duplicates) == (3, 0) and (again.applied, again.duplicates) == (0, 3)
    features = await store.read_request("u1", ())
    assert features.user is not None and features.user.events_applied == 2
    assert features.covis["b"] == [("a", 1.0)] and features.covis["a"] == [("b", 1.0)]
    stats = await store.item_stats()
    assert stats.trending["a"] == pytest.approx(2.0) and stats.clock_ms == BASE_TS + 2 * MIN
    assert (await store.read_request("nobody", ("a",))).covis == {"a": [("b", 1.0)]}
    assert await store.delete_user("u1") and (await store.read_request("u1", ())).user is None
    assert not await store.delete_user("u1")


async def test_a_random_stream_gives_what_the_memory_store_gives(store: FeatureStore, catalog: Catalog) -> None:
    rng = random.Random(5)
    types = [events_pb2.VIEW] * 5 + [events_pb2.CLICK, events_pb2.ADD_TO_CART, events_pb2.PURCHASE, events_pb2.SEARCH]
    events = [event(f"u{rng.randrange(25)}", rng.choice(types), f"i{rng.randrange(30)}",
                    BASE_TS + i * 20_000 - rng.randrange(300_000), event_id=f"e{i}", price=2.0)
              for i in range(3000)]
    expected = MemoryFeatureStore()
    for start in range(0, len(events), 400):
        await apply_events(expected, catalog, events[start : start + 400])
    for start in range(0, len(events), 250):  # other batch boundaries: the same result
        await apply_events(store, catalog, events[start : start + 250])
    users = await store.load_users(expected.users)
    assert users == expected.users
    for user in expected.users:
        got, want = await store.read_request(user, ("i3", "i3")), expected.read_request_now(user, ("i3", "i3"))
        assert got.user is not None and want.user is not None and got.covis == want.covis
        # The read path needs no applied ids (Redis does not read them for a request).
        assert replace(got.user, applied_ids={}) == replace(want.user, applied_ids={})
    stats, want_stats = await store.item_stats(), expected.item_stats_now()
    assert stats.clock_ms == want_stats.clock_ms
    for got_map, want_map in ((stats.popularity, want_stats.popularity), (stats.trending, want_stats.trending)):
        assert got_map.keys() == want_map.keys()
        assert all(math.isclose(got_map[i], want_map[i], rel_tol=1e-9) for i in want_map)


async def test_redis_keys_all_have_a_ttl(redis_url: str, catalog: Catalog) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/5"
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    store = RedisFeatureStore.from_url(url)
    try:
        await apply_events(store, catalog, [view("u1", "a", BASE_TS), view("u1", "b", BASE_TS + MIN)])
        names = [k.decode() async for k in client.scan_iter(count=1000)]
        assert {keys.user("u1"), keys.applied("u1"), keys.covis("a"), keys.POPULARITY, keys.CLOCK} <= set(names)
        for name in names:
            assert await client.pttl(name) > 0, f"{name} has no TTL"
    finally:
        await store.close()
        await client.aclose()


test_redis_keys_all_have_a_ttl = pytest.mark.integration(test_redis_keys_all_have_a_ttl)
