"""The fold, unit by unit, on the in-process store."""

from __future__ import annotations

import random

import pytest

from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.decay import DAY_MS, scale_at
from feature_worker.fold import FoldConfig, ItemDeltas, event_key, fold
from feature_worker.state import UserState
from feature_worker.stores.memory import MemoryFeatureStore
from protos.aisle.v1 import events_pb2
from tests.shop import BASE_TS, event, item, view

MIN = 60_000


@pytest.fixture
def catalog() -> Catalog:
    c = Catalog()
    c.upsert_many(
        [
            item("a", category="beauty/skin/cream", brand="acme"),
            item("b", category="beauty/skin/serum", brand="acme"),
            item("c", category="beauty/hair/shampoo", brand="zen"),
        ]
    )
    return c


def run(
    events: list[events_pb2.Event], catalog: Catalog, config: FoldConfig = FoldConfig()
) -> tuple[UserState, ItemDeltas]:
    state, deltas = UserState(), ItemDeltas()
    for e in events:
        fold(state, e, catalog, deltas, config)
    return state, deltas


def test_duplicate_event_ids_apply_once(catalog: Catalog) -> None:
    e = view("u", "a", BASE_TS, event_id="same")
    state, deltas = UserState(), ItemDeltas()
    assert fold(state, e, catalog, deltas)
    assert not fold(state, e, catalog, deltas)
    assert state.events_applied == 1 and len(state.recent) == 1
    assert deltas.trend[("a", BASE_TS // DAY_MS)] == 1.0


def test_late_events_are_placed_by_timestamp(catalog: Catalog) -> None:
    state, _ = run(
        [view("u", "a", BASE_TS + 2 * MIN), view("u", "b", BASE_TS + 3 * MIN), view("u", "c", BASE_TS + MIN)],
        catalog,
    )
    assert [item for _, _, item in state.recent] == ["c", "a", "b"]


def test_recent_is_capped_keeping_the_newest(catalog: Catalog) -> None:
    events = [view("u", f"x{i}", BASE_TS + i * MIN) for i in range(10)]
    state, _ = run(events, catalog, FoldConfig(recent_cap=4))
    assert [item for _, _, item in state.recent] == ["x6", "x7", "x8", "x9"]


def test_order_does_not_change_decayed_sums_cart_or_covisitation(catalog: Catalog) -> None:
    rng = random.Random(3)
    events = [
        view("u", "a", BASE_TS),
        view("u", "b", BASE_TS + MIN),
        event("u", events_pb2.ADD_TO_CART, "a", BASE_TS + 2 * MIN),
        event("u", events_pb2.REMOVE_FROM_CART, "a", BASE_TS + 3 * MIN),
        event("u", events_pb2.ADD_TO_CART, "c", BASE_TS + 4 * MIN),
        event("u", events_pb2.PURCHASE, "b", BASE_TS + 5 * MIN, price=3.0, quantity=2),
    ]
    in_order, d1 = run(events, catalog)
    shuffled = events[:]
    rng.shuffle(shuffled)
    out_of_order, d2 = run(shuffled, catalog)
    assert in_order.recent == out_of_order.recent
    assert in_order.cart == out_of_order.cart and in_order.cart_items() == ["c"]
    assert in_order.purchases == out_of_order.purchases
    assert in_order.category_affinity == pytest.approx(out_of_order.category_affinity)
    assert in_order.brand_affinity == pytest.approx(out_of_order.brand_affinity)
    assert in_order.engagement == pytest.approx(out_of_order.engagement)
    assert dict(d1.covis) == dict(d2.covis)
    assert dict(d1.popularity) == pytest.approx(dict(d2.popularity))
    assert in_order.monetary == out_of_order.monetary == 6.0


def test_covisitation_pairs_within_the_window_both_ways(catalog: Catalog) -> None:
    _, deltas = run(
        [view("u", "a", BASE_TS), view("u", "b", BASE_TS + MIN), view("u", "c", BASE_TS + 2 * 3_600_000)],
        catalog,
    )
    assert deltas.covis[("a", "b")] == deltas.covis[("b", "a")] == 1.0
    assert ("a", "c") not in deltas.covis and ("c", "b") not in deltas.covis


def test_affinities_credit_every_category_level_and_the_brand(catalog: Catalog) -> None:
    state, _ = run([view("u", "a", BASE_TS), view("u", "b", BASE_TS), view("u", "c", BASE_TS)], catalog)
    scale = scale_at(BASE_TS, FoldConfig().half_life_ms)
    aff = {k: v * scale for k, v in state.category_affinity.items()}
    assert aff["beauty"] == pytest.approx(3.0)
    assert aff["beauty/skin"] == pytest.approx(2.0)
    assert aff["beauty/skin/cream"] == pytest.approx(1.0)
    assert state.brand_affinity["acme"] * scale == pytest.approx(2.0)


def test_decay_halves_after_one_half_life(catalog: Catalog) -> None:
    config = FoldConfig()
    state, _ = run([view("u", "a", BASE_TS)], catalog)
    later = BASE_TS + int(config.half_life_ms)
    assert state.engagement * scale_at(later, config.half_life_ms) == pytest.approx(0.5)


def test_purchase_empties_the_cart_line_and_counts_loyalty(catalog: Catalog) -> None:
    state, _ = run(
        [
            event("u", events_pb2.ADD_TO_CART, "a", BASE_TS),
            event("u", events_pb2.PURCHASE, "", BASE_TS + MIN, item_ids=["a", "b"], price=10.0, quantity=1),
        ],
        catalog,
    )
    assert state.cart_items() == []
    assert set(state.purchases) == {"a", "b"}
    assert state.purchase_count == 1 and state.monetary == 10.0 and state.last_purchase_ms == BASE_TS + MIN


def test_impressions_and_searches_touch_no_item(catalog: Catalog) -> None:
    state, deltas = run(
        [
            event("u", events_pb2.IMPRESSION, "", BASE_TS, item_ids=["a", "b"]),
            event("u", events_pb2.SEARCH, "", BASE_TS, query="cream"),
        ],
        catalog,
    )
    assert state.events_applied == 2 and not state.recent and not deltas


def test_state_round_trips_through_its_stored_form(catalog: Catalog) -> None:
    state, _ = run(
        [
            view("u", "a", BASE_TS),
            event("u", events_pb2.ADD_TO_CART, "b", BASE_TS + MIN),
            event("u", events_pb2.PURCHASE, "c", BASE_TS + 2 * MIN, price=2.5),
        ],
        catalog,
    )
    assert UserState.from_bytes(state.to_bytes(), state.applied_to_bytes()) == state


def test_applied_ids_are_capped(catalog: Catalog) -> None:
    state, _ = run(
        [view("u", "a", BASE_TS + i, event_id=f"e{i}") for i in range(20)],
        catalog,
        FoldConfig(applied_ids_cap=5),
    )
    assert list(state.applied_ids) == [event_key(f"e{i}") for i in range(15, 20)]


async def test_memory_store_applies_batches_idempotently(catalog: Catalog) -> None:
    store = MemoryFeatureStore()
    batch = [view("u1", "a", BASE_TS), view("u1", "b", BASE_TS + MIN), view("u2", "a", BASE_TS + 2 * MIN)]
    first = await apply_events(store, catalog, batch)
    again = await apply_events(store, catalog, batch)
    assert (first.applied, first.duplicates) == (3, 0) and (again.applied, again.duplicates) == (0, 3)
    features = await store.read_request("u1", ())
    assert features.user is not None and features.covis["b"] == [("a", 1.0)]
    stats = await store.item_stats()
    assert stats.trending["a"] == pytest.approx(2.0) and stats.clock_ms == BASE_TS + 2 * MIN
    assert await store.delete_user("u1") and (await store.read_request("u1", ())).user is None
