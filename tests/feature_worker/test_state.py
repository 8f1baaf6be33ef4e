"""The stored form of a user's features: exact, compact, and the same whichever way a state was built."""

from __future__ import annotations

import random

from feature_worker.catalog import Catalog
from feature_worker.decay import quantize
from feature_worker.fold import ItemDeltas, fold
from feature_worker.state import UserState
from protos.aisle.v1 import events_pb2
from tests.shop import BASE_TS, event, item

TYPES = [
    events_pb2.VIEW,
    events_pb2.CLICK,
    events_pb2.SEARCH,
    events_pb2.ADD_TO_CART,
    events_pb2.REMOVE_FROM_CART,
    events_pb2.PURCHASE,
    events_pb2.IMPRESSION,
]


def catalog() -> Catalog:
    c = Catalog()
    c.upsert_many(
        item(f"i{n}", category=f"d{n % 3}/c{n % 5}/leaf{n % 7}", brand=f"b{n % 4}") for n in range(40)
    )
    return c


def folded(seed: int, n: int) -> UserState:
    rng = random.Random(seed)
    state, deltas, shop = UserState(), ItemDeltas(), catalog()
    for i in range(n):
        ts = BASE_TS + i * 30_000 - (rng.randrange(3_600_000) if rng.random() < 0.2 else 0)
        fold(
            state,
            event(
                "u",
                rng.choice(TYPES),
                f"i{rng.randrange(40)}",
                ts,
                item_ids=[f"i{rng.randrange(40)}"],
                price=rng.choice([0.0, 4.5]),
                quantity=rng.randrange(3),
            ),
            shop,
            deltas,
        )
    return state


def test_folded_states_round_trip_exactly() -> None:
    for seed in range(20):
        state = folded(seed, random.Random(seed).randrange(1, 300))
        back = UserState.from_bytes(state.to_bytes(), state.applied_to_bytes())
        assert back == state
        assert back.to_bytes() == state.to_bytes(), "deterministic"


def test_a_state_that_was_stored_folds_on_exactly_like_one_that_was_not() -> None:
    shop = catalog()
    stayed, deltas = folded(3, 120), ItemDeltas()
    stored = UserState.from_bytes(stayed.to_bytes(), stayed.applied_to_bytes())
    for n in range(50):
        e = event("u", events_pb2.VIEW, f"i{n % 40}", BASE_TS + 10**7 + n)
        fold(stayed, e, shop, deltas)
        fold(stored, e, shop, ItemDeltas())
    assert stored == stayed


def test_weights_the_fold_did_not_make_are_still_stored_exactly() -> None:
    state = UserState(
        category_affinity={"a": 0.1, "a/b": 1e-300, "c": 1e300},
        brand_affinity={"x": 1 / 3},
        engagement=2.0**-1000,
        last_seen_ms=5,
    )
    assert UserState.from_bytes(state.to_bytes()) == state


def test_empty_and_minimal_states() -> None:
    assert UserState.from_bytes(UserState().to_bytes()) == UserState()
    only_seen = UserState(events_applied=1, last_seen_ms=BASE_TS, engagement=quantize(3.7))
    assert UserState.from_bytes(only_seen.to_bytes()) == only_seen
