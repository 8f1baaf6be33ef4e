"""One contract for every feature store: the in-process store and Redis answer alike."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

import pytest
import redis.asyncio as aioredis

from feature_worker import keys
from feature_worker.apply import apply_events, fold_batch
from feature_worker.catalog import Catalog
from feature_worker.errors import StoreUnavailable
from feature_worker.stores import redis as redis_store_module
from feature_worker.stores.base import FeatureStore
from feature_worker.stores.bounds import NEIGHBOURS_PER_SEED, heaviest
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.stores.redis import RedisFeatureStore
from feature_worker.stores.redis_cluster import RedisClusterFeatureStore, redis_store_from_url
from loadtest.harness.services.redis import flush
from protos.aisle.v1 import events_pb2
from tests.sealing import sealed_store
from tests.shop import BASE_TS, event, item, view

MIN = 60_000


@pytest.fixture
def catalog() -> Catalog:
    c = Catalog()
    c.upsert_many(item(f"i{n}", category=f"d{n % 3}/c{n % 6}", brand=f"b{n % 4}") for n in range(30))
    c.upsert_many(
        [item("a", category="beauty/skin/cream", brand="acme"), item("b", category="beauty/skin/serum")]
    )
    return c


@pytest.fixture(
    params=[
        "memory",
        *(
            pytest.param(name, marks=pytest.mark.integration)
            for name in ("redis", "redis-sealed", "redis-cluster", "redis-cluster-sealed")
        ),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[FeatureStore]:
    """Every backend; `-sealed` is with encryption at rest (features sealed per customer), `redis-cluster` is
    a Redis Cluster of three primaries."""
    if request.param == "memory":
        yield MemoryFeatureStore()
        return
    if request.param.startswith("redis-cluster"):
        url = request.getfixturevalue("redis_cluster_url")
    else:
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/4"
    await asyncio.to_thread(flush, url)
    redis_store = sealed_store(url) if request.param.endswith("-sealed") else redis_store_from_url(url)
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


async def test_the_in_process_store_ranks_a_seeds_neighbours_only_when_they_are_read(
    catalog: Catalog,
) -> None:
    store = MemoryFeatureStore()
    # u1 views i0..i11: each of them co-visits the others.
    await apply_events(store, catalog, [view("u1", f"i{n}", BASE_TS + n * MIN) for n in range(12)])
    features = await store.read_request("u1", ())
    ranked = store.features._covis_sorted
    assert ranked == {}  # nothing ranked by the read itself
    newest = features.covis.get("i11")
    assert newest is not None and ("i10", 1.0) in newest and set(ranked) == {"i11"}
    assert features.covis.get("i0") is None  # not among the ten newest seeds
    assert features.covis.get("nowhere") is None and "nowhere" not in features.covis
    assert list(features.covis) == [f"i{n}" for n in range(11, 1, -1)] and len(features.covis) == 10
    # The same lists as ranking every seed's when read, in the seeds' order.
    eager = {item: store.features.ranked_neighbours(item) for item in features.covis}
    assert dict(features.covis) == eager and features.covis == eager


async def test_the_in_process_store_ranks_changed_lists_when_asked_latest_change_first(
    catalog: Catalog,
) -> None:
    store = MemoryFeatureStore()
    features = store.features
    await apply_events(store, catalog, [view("u1", f"i{n}", BASE_TS + n * MIN) for n in range(4)])
    assert store.unranked == 4 and features._covis_sorted == {}
    read = (await store.read_request("u1", ())).covis.get("i3")  # a read ranks i3's list itself
    await apply_events(
        store, catalog, [view("u2", "i5", BASE_TS + 9 * MIN), view("u2", "i0", BASE_TS + 10 * MIN)]
    )
    # i5 and i0 changed last (i0 again): ranked first; i3's list, ranked by the read, is handed out as it is.
    first = await store.rank_changed(2)
    assert sorted(item for item, _ in first) == ["i0", "i5"]
    rest = await store.rank_changed(10)
    assert sorted(item for item, _ in rest) == ["i1", "i2", "i3"] and dict(rest)["i3"] is read
    assert store.unranked == 0 and await store.rank_changed(10) == []
    # The same lists a read ranks, and a read now ranks nothing more.
    for seed, ranked in first + rest:
        assert ranked == heaviest(features.covis[seed].items(), NEIGHBOURS_PER_SEED)
        assert features.ranked_neighbours(seed) is ranked
    # A snapshot loaded into the store may have changed every list.
    features.changed()
    assert store.unranked == len(features.covis) == 5 and features._covis_sorted == {}
    # A store that keeps its lists ranked (Redis) has none to rank.
    assert FeatureStore.ranks_on_read is False and store.ranks_on_read is True


async def test_a_random_stream_gives_what_the_memory_store_gives(
    store: FeatureStore, catalog: Catalog
) -> None:
    rng = random.Random(5)
    types = [events_pb2.VIEW] * 5 + [
        events_pb2.CLICK,
        events_pb2.ADD_TO_CART,
        events_pb2.PURCHASE,
        events_pb2.SEARCH,
    ]
    events = [
        event(
            f"u{rng.randrange(25)}",
            rng.choice(types),
            f"i{rng.randrange(30)}",
            BASE_TS + i * 20_000 - rng.randrange(300_000),
            event_id=f"e{i}",
            price=2.0,
        )
        for i in range(3000)
    ]
    expected = MemoryFeatureStore()
    for start in range(0, len(events), 400):
        await apply_events(expected, catalog, events[start : start + 400])
    for start in range(0, len(events), 250):  # other batch boundaries: the same result
        await apply_events(store, catalog, events[start : start + 250])
    users = await store.load_users(expected.features.users)
    assert users == expected.features.users
    for user in expected.features.users:
        got, want = (
            await store.read_request(user, ("i3", "i3")),
            expected.features.read_request(user, ("i3", "i3")),
        )
        assert got.user is not None and want.user is not None and got.covis == want.covis
        # The read path needs no applied ids (Redis does not read them for a request).
        assert replace(got.user, applied_ids={}) == replace(want.user, applied_ids={})
    stats, want_stats = await store.item_stats(), expected.features.item_stats()
    assert stats.clock_ms == want_stats.clock_ms
    for got_map, want_map in (
        (stats.popularity, want_stats.popularity),
        (stats.trending, want_stats.trending),
    ):
        assert got_map.keys() == want_map.keys()
        assert all(math.isclose(got_map[i], want_map[i], rel_tol=1e-9) for i in want_map)


async def test_a_list_read_again_unchanged_is_the_same_object_and_a_changed_one_is_read_anew(
    store: FeatureStore, catalog: Catalog
) -> None:
    """Redis replies are decoded once per content (`NeighbourLists`): the server converts a list once per list
    object, so an unchanged seed costs nothing the second time, and a changed one is never served stale."""
    await apply_events(store, catalog, [view("u1", f"i{n}", BASE_TS + n * MIN) for n in range(5)])
    read = (await store.read_request("u1", ("i0",))).covis
    first = {"i0": read["i0"], "i4": read["i4"]}  # the in-process store's mapping ranks when looked up
    again = (await store.read_request("u2", ("i0", "i4"))).covis
    assert again["i0"] is first["i0"] and again["i4"] is first["i4"]
    # u2 co-visits i0 with i7: i0's list changes (one count and one new neighbour), i4's does not.
    await apply_events(
        store, catalog, [view("u2", "i0", BASE_TS + 9 * MIN), view("u2", "i7", BASE_TS + 10 * MIN)]
    )
    after = (await store.read_request("nobody", ("i0", "i4"))).covis
    assert after["i4"] is first["i4"]
    assert after["i0"] is not first["i0"] and ("i7", 1.0) in after["i0"]
    expected = MemoryFeatureStore()
    await apply_events(expected, catalog, [view("u1", f"i{n}", BASE_TS + n * MIN) for n in range(5)])
    await apply_events(
        expected, catalog, [view("u2", "i0", BASE_TS + 9 * MIN), view("u2", "i7", BASE_TS + 10 * MIN)]
    )
    assert after == expected.features.read_request("nobody", ("i0", "i4")).covis


async def test_shop_wide_counters_larger_than_a_read_chunk_are_read_whole(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis reads the popularity and trending hashes in HSCAN chunks (`STATS_CHUNK`), so that a refresh never
    holds the server's event loop for long: 600 items (past the compact encoding, where one HSCAN returns the
    whole hash) read in chunks of 50 give what the in-process store gives."""
    monkeypatch.setattr(redis_store_module, "STATS_CHUNK", 50)
    catalog = Catalog()
    catalog.upsert_many(item(f"i{n}") for n in range(600))
    events = [view(f"u{n % 40}", f"i{n}", BASE_TS + n * 1_000) for n in range(600)]
    expected = MemoryFeatureStore()
    await apply_events(expected, catalog, events)
    await apply_events(store, catalog, events)
    stats, want = await store.item_stats(), expected.features.item_stats()
    assert len(stats.popularity) == len(stats.trending) == 600
    assert stats.popularity == pytest.approx(want.popularity, rel=1e-9)
    assert stats.trending == pytest.approx(want.trending, rel=1e-9)


async def test_redis_keys_all_have_a_ttl(redis_url: str, catalog: Catalog) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/5"
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    store = RedisFeatureStore.from_url(url)
    try:
        await apply_events(store, catalog, [view("u1", "a", BASE_TS), view("u1", "b", BASE_TS + MIN)])
        names = [k.decode() async for k in client.scan_iter(count=1000)]
        assert {keys.user("u1"), keys.applied("u1"), keys.covis("a"), keys.POPULARITY, keys.CLOCK} <= set(
            names
        )
        for name in names:
            assert await client.pttl(name) > 0, f"{name} has no TTL"
    finally:
        await store.close()
        await client.aclose()


test_redis_keys_all_have_a_ttl = pytest.mark.integration(test_redis_keys_all_have_a_ttl)


class _KilledAfterUserWrites(RedisClusterFeatureStore):
    """A Cluster store whose commits stop after their first step, as a worker killed right then leaves them:
    users written, their increments only in the outboxes."""

    async def _drain(self) -> None:
        self._pending.clear()


class _KilledBeforeDeleting(RedisClusterFeatureStore):
    """A Cluster store whose commits stop before their last step: increments made, outbox entries left."""

    async def _drain(self) -> None:
        await self._apply(self._pending)
        self._pending.clear()


@pytest.mark.parametrize("killed", [_KilledAfterUserWrites, _KilledBeforeDeleting])
async def test_a_cut_cluster_commit_is_finished_once_by_recover(
    redis_cluster_url: str, catalog: Catalog, killed: type[RedisClusterFeatureStore]
) -> None:
    await asyncio.to_thread(flush, redis_cluster_url)
    rng = random.Random(8)
    events = [
        view(f"u{rng.randrange(40)}", f"i{rng.randrange(30)}", BASE_TS + i * 30_000) for i in range(600)
    ]
    expected = MemoryFeatureStore()
    await apply_events(expected, catalog, events)
    cut = killed.from_url(redis_cluster_url)
    store = RedisClusterFeatureStore.from_url(redis_cluster_url)
    try:
        assert (await apply_events(cut, catalog, events[:300])).applied == 300
        if killed is _KilledAfterUserWrites:
            assert (await store.item_stats()).popularity == {}  # the increments wait in the outboxes
        # The redelivered batch is recognised by the users' applied ids: no increment is made twice...
        assert (await apply_events(store, catalog, events[:300])).duplicates == 300
        await store.recover()  # ...and the waiting ones are made once, however often recovery runs.
        await store.recover()
        await apply_events(store, catalog, events[300:])
        stats, want = await store.item_stats(), expected.features.item_stats()
        assert stats.popularity.keys() == want.popularity.keys()
        assert all(
            math.isclose(stats.popularity[i], want.popularity[i], rel_tol=1e-9) for i in want.popularity
        )
        assert all(math.isclose(stats.trending[i], want.trending[i], rel_tol=1e-9) for i in want.trending)
        for item_id, neighbours in expected.features.covis.items():
            # A client without decode_responses answers ZRANGE WITHSCORES with (member bytes, score) pairs.
            raw = cast(
                list[tuple[bytes, float]],
                await store.client.zrange(keys.covis(item_id), 0, -1, withscores=True),
            )
            assert {k.decode(): v for k, v in raw} == neighbours
        assert await store.load_users(expected.features.users) == expected.features.users
    finally:
        await cut.close()
        await store.close()


test_a_cut_cluster_commit_is_finished_once_by_recover = pytest.mark.integration(
    test_a_cut_cluster_commit_is_finished_once_by_recover
)


async def test_a_cluster_batch_folded_for_another_node_layout_is_refused_whole(
    redis_cluster_url: str, catalog: Catalog
) -> None:
    """As after a failover between fold and commit: a user's increments were grouped for a node that no longer
    holds the user's slot. Nothing is written (the worker folds the batch again)."""
    await asyncio.to_thread(flush, redis_cluster_url)
    store = RedisClusterFeatureStore.from_url(redis_cluster_url)
    try:
        users = await store.load_users(["u1", "u2"])
        assert store.delta_group is not None
        changed, deltas, applied = fold_batch(
            users, catalog, [view("u1", "a", BASE_TS), view("u2", "b", BASE_TS)], group=store.delta_group
        )
        assert applied == 2 and len(deltas.groups) >= 1
        deltas.group_of["u1"] = "127.0.0.1:1"  # a node that is not u1's now
        with pytest.raises(StoreUnavailable):
            await store.commit(changed, deltas)
        assert (await store.read_request("u2", ())).user is None and (
            await store.item_stats()
        ).popularity == {}
    finally:
        await store.close()


test_a_cluster_batch_folded_for_another_node_layout_is_refused_whole = pytest.mark.integration(
    test_a_cluster_batch_folded_for_another_node_layout_is_refused_whole
)
