"""The fold: one event -> updates to one user's features and to item-level counters.

Pure: no I/O and no clock. The same state and event always give the same result, which is what lets
the embedded server, the Kafka worker and `trainer evaluate` share it, and a replay rebuild state
exactly.

Guarantees kept here:
- Idempotency: an `event_id` already applied to the user is skipped. The last
  `FoldConfig.applied_ids_cap` ids per user are remembered, as 64-bit hashes (`event_key`): a duplicate
  is recognised while it is among the user's last `applied_ids_cap` applied events, and a new event is
  taken for a duplicate with probability `applied_ids_cap / 2**64` (never, in practice).
- Order: interactions are placed by `ts_ms`, not arrival; decayed sums commute (`decay`), the cart is
  last-writer-wins by timestamp, and a co-visitation pair is counted when the second of its two events
  arrives, whichever that is. So late events land where they belong.
- Precision: a user's decayed sums (affinities, engagement) are kept at 24 significant bits
  (`decay.quantize`) after every addition, which lets the stored form hold them in 4 bytes exactly.
- Bounds: every per-user collection is capped (`FoldConfig`). What a cap drops never depends on the
  order of a dict (ties are broken by key), so a state that went through its stored form
  (`UserState.to_bytes`) folds on exactly as one that stayed in memory.
Events must be validated first (`validation.validate_event`); the fold does not re-check input.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from sys import intern

from feature_worker.catalog import Catalog, ItemInfo
from feature_worker.decay import DAY_MS, encode
from feature_worker.state import UserState
from protos.aisle.v1 import events_pb2

VIEW = events_pb2.VIEW
CLICK = events_pb2.CLICK
SEARCH = events_pb2.SEARCH
ADD_TO_CART = events_pb2.ADD_TO_CART
REMOVE_FROM_CART = events_pb2.REMOVE_FROM_CART
PURCHASE = events_pb2.PURCHASE
IMPRESSION = events_pb2.IMPRESSION

#: How much an interaction says about interest in an item (popularity, trending, affinities).
INTEREST_WEIGHT: dict[int, float] = {
    VIEW: 1.0,
    CLICK: 1.5,
    ADD_TO_CART: 3.0,
    REMOVE_FROM_CART: 0.0,
    PURCHASE: 5.0,
}
#: How much an event says about a customer's engagement with the shop (documented in users.proto).
ENGAGEMENT_WEIGHT: dict[int, float] = {
    VIEW: 1.0,
    CLICK: 2.0,
    SEARCH: 1.0,
    ADD_TO_CART: 3.0,
    REMOVE_FROM_CART: 0.0,
    PURCHASE: 5.0,
    IMPRESSION: 0.0,
}
#: Event types whose items are paired for co-visitation ("customers who viewed this also viewed").
COVISIT_TYPES = frozenset({VIEW, CLICK, ADD_TO_CART, PURCHASE})
#: Event types that act on no item.
_NO_ITEMS = frozenset({IMPRESSION, SEARCH, events_pb2.EVENT_TYPE_UNSPECIFIED})

_blake2b = hashlib.blake2b
_frexp = math.frexp
_ldexp = math.ldexp
#: 2**24: `decay.quantize` keeps this many significant bits.
_MANTISSA = 16_777_216.0


@dataclass(frozen=True, slots=True)
class FoldConfig:
    """Caps and time constants of the fold. Changing them changes stored features: bump `keys.VERSION`."""

    recent_cap: int = 50
    cart_cap: int = 100
    purchases_cap: int = 200
    affinity_cap: int = 64
    #: Duplicates are recognised among a user's last this many events. The Kafka worker redelivers at
    #: most one batch after a crash, so `Settings.batch_max` may not exceed it: then even a user who is
    #: every event of a batch has each redelivered event recognised.
    applied_ids_cap: int = 2000
    half_life_ms: float = 30 * DAY_MS
    covis_window_ms: int = 3_600_000
    covis_max_pairs: int = 10


@dataclass(slots=True)
class ItemDeltas:
    """Item-level increments collected over a batch of events; every one is a commutative addition."""

    popularity: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: (item_id, UTC day number) -> interest weight observed that day.
    trend: defaultdict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    #: (item_id, neighbour item_id) -> co-visit count; both directions are present. Integers: they
    #: travel to Redis as JSON, where "1" is written more cheaply than "1.0" and means the same.
    covis: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: The newest event time seen: the stream clock that trending and decay are read at.
    clock_ms: int = 0
    #: For a store that commits per group of users (Redis Cluster: per node), the increments split by the
    #: group of the user whose events made them (`apply.fold_batch` with `group`); the fields above are then
    #: left empty.
    groups: dict[str, ItemDeltas] = field(default_factory=dict)
    #: With `groups`: user id -> the group their increments were put in (the store checks it still holds).
    group_of: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.popularity or self.trend or self.covis or any(self.groups.values()))


def event_key(event_id: str) -> int:
    """The 64-bit hash an applied event id is remembered by (stable across processes and versions)."""
    return int.from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "little")


def acted_items(event: events_pb2.Event) -> list[str]:
    """The items an event acts on, in order, each once. Impressions and searches act on none."""
    if event.type in _NO_ITEMS:
        return []
    items = [intern(event.item_id)] if event.item_id else []
    for item in event.item_ids:
        if item not in items:
            items.append(intern(item))
    return items


def fold(
    state: UserState,
    event: events_pb2.Event,
    catalog: Catalog,
    deltas: ItemDeltas,
    config: FoldConfig = FoldConfig(),
) -> bool:
    """Apply one validated event to `state` (in place) and add its item-level updates to `deltas`.

    Returns False, changing nothing, when the event's id was already applied to this user.
    """
    # The hot loop of the worker: written for CPython's speed (locals, no key functions), with the
    # same arithmetic, in the same order, as the plain version would do.
    key = event_key(event.event_id)
    applied_ids = state.applied_ids
    if key in applied_ids:
        return False
    applied_ids[key] = None
    if len(applied_ids) > config.applied_ids_cap:
        del applied_ids[next(iter(applied_ids))]

    etype = event.type
    ts = event.ts_ms
    state.events_applied += 1
    state.last_seen_ms = max(state.last_seen_ms, ts)
    deltas.clock_ms = max(deltas.clock_ms, ts)
    engagement = ENGAGEMENT_WEIGHT.get(etype, 0.0)
    interest = INTEREST_WEIGHT.get(etype, 0.0)
    # encode(w, ts) == w * encode(1.0, ts) exactly: one power of two per event serves every weight.
    growth = encode(1.0, ts, config.half_life_ms) if engagement or interest else 0.0
    if engagement:
        mantissa, exponent = _frexp(state.engagement + engagement * growth)
        state.engagement = _ldexp(round(mantissa * _MANTISSA), exponent - 24)  # quantize, inlined

    if etype in _NO_ITEMS:
        return True
    if event.item_ids:
        items: Sequence[str] = acted_items(event)
        if not items:
            return True
    else:
        item_id = event.item_id
        if not item_id:
            return True
        # Interned: every dict the serving path looks item ids up in (the catalog's positions, the bundle's
        # vocabulary) then finds them by identity, several times faster than comparing the strings.
        items = (intern(item_id),)
    if interest:
        weight = interest * growth
        day = ts // DAY_MS
        popularity = deltas.popularity
        trend = deltas.trend
        get_item = catalog.items.get
        for item in items:
            popularity[item] += weight
            trend[(item, day)] += interest
            info = get_item(item)
            if info is not None:  # an item not (yet) in the catalog has no category or brand to credit
                _add_affinities(state, info, weight, config)

    covisit = etype in COVISIT_TYPES
    recent_cap = config.recent_cap
    for item in items:
        if covisit:
            _pair_with_recent(state, item, ts, deltas, config)
        _insert_recent(state, (ts, etype, item), recent_cap)

    if etype == ADD_TO_CART or etype == REMOVE_FROM_CART:
        for item in items:
            _set_cart_line(state, item, ts, etype == ADD_TO_CART, config.cart_cap)
    elif etype == PURCHASE:
        _apply_purchase(state, event, items, config)
    return True


def _insert_recent(state: UserState, entry: tuple[int, int, str], cap: int) -> None:
    recent = state.recent
    # After every entry with the same timestamp: ties keep arrival order. `(ts + 1,)` sorts before
    # every entry of time ts + 1 and after every one of time ts (timestamps are integers), so the
    # bisection compares timestamps only, without a key function.
    recent.insert(bisect_left(recent, (entry[0] + 1,)), entry)
    if len(recent) > cap:
        del recent[0]


def _pair_with_recent(state: UserState, item: str, ts: int, deltas: ItemDeltas, config: FoldConfig) -> None:
    """Count `item` as co-visited with each of the user's interactions with other items in the window.

    Pairs are of events, not of distinct items: the pair (e1, e2) is counted once, by whichever of
    the two arrives second, so counts do not depend on arrival order (unless more than
    `covis_max_pairs` events fall in the window, when the nearest in time win).
    """
    window = config.covis_window_ms
    recent = state.recent
    # `recent` is sorted by time: only the slice inside the window can pair (entries of time
    # ts - window to ts + window; see `_insert_recent` for the one-element tuples).
    lo = bisect_left(recent, (ts - window,))
    hi = bisect_left(recent, (ts + window + 1,), lo)
    if lo == hi:
        return
    near = [
        (abs(r_ts - ts), r_item)
        for r_ts, r_type, r_item in recent[lo:hi]
        if r_item != item and r_type in COVISIT_TYPES
    ]
    if not near:
        return
    if len(near) > config.covis_max_pairs:
        near = sorted(near)[: config.covis_max_pairs]
    covis = deltas.covis
    for _, other in near:
        covis[(item, other)] += 1
        covis[(other, item)] += 1


def _add_affinities(state: UserState, info: ItemInfo, weight: float, config: FoldConfig) -> None:
    # `quantize` inlined (this runs for every category level of every item event).
    frexp, ldexp = _frexp, _ldexp
    categories = state.category_affinity
    for prefix in info.categories:
        mantissa, exponent = frexp(categories.get(prefix, 0.0) + weight)
        categories[prefix] = ldexp(round(mantissa * _MANTISSA), exponent - 24)
    if len(categories) > config.affinity_cap:
        _keep_largest(categories, config.affinity_cap)
    brand = info.brand
    if brand:
        brands = state.brand_affinity
        mantissa, exponent = frexp(brands.get(brand, 0.0) + weight)
        brands[brand] = ldexp(round(mantissa * _MANTISSA), exponent - 24)
        if len(brands) > config.affinity_cap:
            _keep_largest(brands, config.affinity_cap)


def _keep_largest(weights: dict[str, float], cap: int) -> None:
    # Ties (a category and its only sub-category weigh the same) go by key, never by dict order.
    for key, _ in sorted(weights.items(), key=_weight_then_key)[: len(weights) - cap]:
        del weights[key]


def _weight_then_key(kv: tuple[str, float]) -> tuple[float, str]:
    return (kv[1], kv[0])


def _set_cart_line(state: UserState, item: str, ts: int, in_cart: bool, cap: int) -> None:
    line = state.cart.get(item)
    if line is None or ts >= line[0]:
        state.cart[item] = (ts, in_cart)
    if len(state.cart) > cap:
        # Forget lines no longer in the cart first, then the oldest (ties by item id).
        oldest = min(state.cart.items(), key=lambda kv: (kv[1][1], kv[1][0], kv[0]))[0]
        del state.cart[oldest]


def _apply_purchase(
    state: UserState, event: events_pb2.Event, items: Sequence[str], config: FoldConfig
) -> None:
    ts = event.ts_ms
    for item in items:
        last_ts, count = state.purchases.get(item, (0, 0))
        state.purchases[item] = (max(last_ts, ts), count + 1)
        line = state.cart.get(item)
        if line is not None and line[1] and ts >= line[0]:
            state.cart[item] = (ts, False)
    if len(state.purchases) > config.purchases_cap:
        oldest = min(state.purchases.items(), key=lambda kv: (kv[1][0], kv[0]))[0]
        del state.purchases[oldest]
    state.purchase_count += 1
    state.last_purchase_ms = max(state.last_purchase_ms, ts)
    # price is a unit price; quantity 0 means one.
    state.monetary += event.price * max(event.quantity, 1)
