"""Deterministic generated retail data: a catalog, its users and thirty days of their events.

``generate_shop(users, items, seed, out)`` (and ``python -m trainer generate``) writes a shop that
:mod:`trainer.data.generated` reads back. The same arguments always give byte-identical files: every random draw
comes from ``numpy.random.default_rng`` seeded by ``seed``, nothing reads the clock, and the catalog draws from its
own stream, so a shop's catalog depends on ``(seed, items)`` only, whatever the number of users.

The model behind the events, so that a recommender has something real to learn:

* a category tree of departments, sub-categories and leaves (``beauty/skin/moisturizer``); the number of leaves
  grows with the square root of the catalog size;
* items have a Zipf-like popularity, a brand of their department (brand sizes are long-tailed, and each brand has
  a price tier) and a price drawn lognormally around their leaf's median;
* users have latent tastes: a Dirichlet preference over departments shifted by age and gender, a few favourite
  leaves, three preferred brands, a preferred price level and propensities to click, search, cart and buy; a
  lognormal activity level makes a few users heavy and most light (about 12 events per user on average);
* a session stays in one leaf, which gives real co-visitation: the user views several of its items, chosen
  without replacement with probability proportional to popularity x brand preference x price fit, and half
  the sessions focus on one brand of the leaf, so co-viewed items often share a brand; some views
  are clicked or carted, some carts are removed, some sessions start with a search (its query made of words of
  the category) and some end in a purchase, one row per item bought;
* buyers of consumables (groceries, beauty, pet food...) come back to buy the same item again after its
  replenishment interval, in a short view, cart, purchase session.

Sessions start over the thirty days before ``end_ts_ms``, more often in the evening (UTC), with seconds to minutes
between a session's events; every event has ``end_ts_ms - 30 days <= ts_ms < end_ts_ms``. Each cart or purchase of
an item comes after a view of that item by the same user in the same session.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format
from google.protobuf.message import Message
from tqdm import tqdm

from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from trainer.data.generated import EVENT_COLUMNS, EVENTS_FILE, ITEMS_FILE, META_FILE, USERS_FILE
from trainer.taxonomy import (
    AGE_BANDS,
    AGE_LEAN,
    AGE_SHARE,
    BRAND_HEADS,
    BRAND_MIDDLES,
    BRAND_TAILS,
    DEPARTMENTS,
    GENDER_LEAN,
    GENDER_SHARE,
    GENDER_SUBCATEGORY_LEAN,
    GENDERS,
    HOURLY,
    LOYALTY_QUANTILES,
    LOYALTY_TIERS,
    REGION_SHARE,
    REGIONS,
    SCHEMAS,
    TAXONOMY,
    Leaf,
    all_leaves,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_END_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_DAYS = 30
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# --- Behaviour constants -----------------------------------------------------------------------------------

_FAVOURITE_LEAVES = 4  # leaves a user keeps coming back to
_PREFERRED_BRANDS = 3
_EXPLORE = 0.15  # chance that a session leaves the user's favourites for a leaf drawn by traffic
_MAX_VIEWS = 12  # views per session
_MEAN_EXTRA_VIEWS = 2.3  # views per session are 1 + Poisson(this), capped
# Sessions per user are 1 + Poisson(activity), with a lognormal activity of this mean.
_MEAN_EXTRA_SESSIONS = 1.4
_ACTIVITY_SIGMA = 1.1
_BRAND_BOOST = math.log(4.0)  # a preferred brand's item is 4x as likely to be viewed
# Many sessions shop one brand of their leaf (the user's preferred one when it sells there): its items are
# _FOCUS_BOOST times as likely. This is what makes "co-viewed with X" lean towards X's brand.
_BRAND_FOCUS = 0.5
_FOCUS_BOOST = math.log(6.0)
_POPULARITY_EXPONENT = 0.9  # item popularity ~ rank ** -exponent
_REMOVE = 0.15  # chance that a carted item is removed again
_IN_STOCK = 0.95
# Median seconds before an event, by event type (the first event of a session has none); lognormal spread.
_GAP_MEDIAN_S = {
    events_pb2.VIEW: 25.0,
    events_pb2.CLICK: 8.0,
    events_pb2.SEARCH: 5.0,
    events_pb2.ADD_TO_CART: 12.0,
    events_pb2.REMOVE_FROM_CART: 30.0,
    events_pb2.PURCHASE: 90.0,
}
_ROWS_PER_BLOCK = 4_000_000  # bounds the memory of one block of the session x item weight matrix


@dataclass(frozen=True)
class _Catalog:
    leaves: list[Leaf]
    leaf_share: FloatArray  # per leaf: probability that an exploring session lands there
    item_leaf: IntArray
    item_brand: IntArray
    brand_names: list[str]
    price: FloatArray
    price_z: FloatArray  # log price standardized within the leaf
    log_pop: FloatArray
    in_stock: BoolArray
    items_by_leaf: list[IntArray]
    leaf_item_key: FloatArray  # items sorted by leaf, key = leaf + cumulative popularity share in the leaf
    leaf_item_order: IntArray


@dataclass(frozen=True)
class _Users:
    age: IntArray
    gender: IntArray
    region: IntArray
    tier: IntArray
    sessions: IntArray
    favourite_leaf: IntArray  # (users, _FAVOURITE_LEAVES)
    favourite_cdf: FloatArray  # (users, _FAVOURITE_LEAVES), cumulative weights
    preferred_brand: IntArray  # (users, _PREFERRED_BRANDS)
    price_level: FloatArray  # the price z-score the user likes
    price_width: FloatArray  # how far from it the user still looks
    p_click: FloatArray
    p_search: FloatArray
    p_cart: FloatArray
    p_buy: FloatArray
    p_rebuy: FloatArray


@dataclass
class _EventRows:
    """Columns of event rows, in no particular order until sorted."""

    session: IntArray
    order: FloatArray  # position within the session
    type: IntArray
    item: IntArray  # -1 for SEARCH
    quantity: IntArray  # 0 when the type has none
    query: IntArray  # index into the query list, 0 is ""
    ts: IntArray

    @staticmethod
    def concat(parts: Sequence[_EventRows]) -> _EventRows:
        return _EventRows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_EventRows)))

    def take(self, index: IntArray) -> _EventRows:
        return _EventRows(*(getattr(self, f.name)[index] for f in fields(self)))


def generate_shop(
    users: int,
    items: int,
    seed: int,
    out: Path,
    end_ts_ms: int = DEFAULT_END_TS_MS,
    *,
    progress: bool = True,
) -> dict[str, int]:
    """Write a generated shop of ``users`` users and ``items`` items to the directory ``out``; return its meta.

    The files are ``items.jsonl``, ``users.jsonl``, ``events.csv`` and ``meta.json`` (see
    :mod:`trainer.data.generated`). Each file is written under a temporary name and renamed into place, and
    ``meta.json`` comes last, so a directory with a ``meta.json`` holds a complete shop. The meta is
    ``{"users", "items", "seed", "events", "start_ms", "end_ms"}``, and every event has
    ``start_ms <= ts_ms < end_ms = end_ts_ms``. ``progress`` shows tqdm bars on stderr.
    """
    if users < 1 or items < 1:
        raise ValueError(f"users and items must be at least 1, got users={users}, items={items}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    start_ms = end_ts_ms - WINDOW_DAYS * DAY_MS
    if start_ms < 0:
        raise ValueError(f"end_ts_ms must be at least {WINDOW_DAYS} days after the epoch, got {end_ts_ms}")
    # Independent streams per stage: the catalog does not change when only the number of users does.
    catalog_rng, users_rng, events_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )

    catalog = _build_catalog(items, catalog_rng)
    item_messages = _item_messages(catalog, catalog_rng)
    shop_users = _build_users(users, catalog, users_rng)
    rows, session_user, queries = _build_events(
        shop_users, catalog, events_rng, start_ms, end_ts_ms, progress
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / ITEMS_FILE, item_messages)
    _write_jsonl(out / USERS_FILE, _user_messages(shop_users))
    _write_events(out / EVENTS_FILE, rows, session_user, queries, catalog, progress)
    meta = {
        "users": users,
        "items": items,
        "seed": seed,
        "events": len(rows.ts),
        "start_ms": start_ms,
        "end_ms": end_ts_ms,
    }
    _write_atomically(out / META_FILE, lambda f: f.write(json.dumps(meta, indent=2) + "\n"))
    return meta


# --- Catalog -----------------------------------------------------------------------------------------------


def _choose_leaves(items: int, rng: np.random.Generator) -> list[Leaf]:
    """About sqrt(items) leaves, taken round-robin over the departments so that small shops stay varied."""
    candidates = all_leaves()
    wanted = min(len(candidates), max(1, round(math.sqrt(items))))
    by_department: list[list[Leaf]] = [[] for _ in DEPARTMENTS]
    for leaf in candidates:
        by_department[leaf.department].append(leaf)
    queues = [[group[i] for i in rng.permutation(len(group))] for group in by_department]
    chosen: list[Leaf] = []
    for d in rng.permutation(len(queues)).tolist() * max(len(q) for q in queues):
        if len(chosen) == wanted:
            break
        if queues[d]:
            chosen.append(queues[d].pop())
    return sorted(chosen, key=candidates.index)


def _brand_names(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct made-up brand names."""
    pool = sorted(
        {head + middle + tail for head in BRAND_HEADS for middle in BRAND_MIDDLES for tail in BRAND_TAILS}
    )
    names = [pool[i] for i in rng.permutation(len(pool))[:count]]
    # The pool (4,800 names) is far above what a large catalog needs; numbered names keep absurd sizes working.
    names += [f"{pool[i % len(pool)]} {i // len(pool) + 1}" for i in range(len(names), count)]
    return names


def _build_catalog(items: int, rng: np.random.Generator) -> _Catalog:
    leaves = _choose_leaves(items, rng)
    n_leaves = len(leaves)
    leaf_department = np.array([leaf.department for leaf in leaves])

    # Every leaf gets an item, the rest spread unevenly (some leaves are deep, some shallow).
    per_leaf = 1 + rng.multinomial(items - n_leaves, rng.dirichlet(np.full(n_leaves, 4.0)))
    item_leaf = rng.permutation(np.repeat(np.arange(n_leaves), per_leaf))
    item_department = leaf_department[item_leaf]

    # Brands belong to one department; sizes are long-tailed (Zipf), about one brand per 25 items.
    item_brand = np.zeros(items, dtype=np.int64)
    n_brands_total = 0
    for d in range(len(DEPARTMENTS)):
        members = np.flatnonzero(item_department == d)
        if len(members) == 0:
            continue
        n_brands = min(len(members), max(2, round(len(members) / 25)))
        weights = 1.0 / np.arange(1, n_brands + 1)
        item_brand[members] = n_brands_total + rng.choice(
            n_brands, size=len(members), p=weights / weights.sum()
        )
        n_brands_total += n_brands
    brand_names = _brand_names(n_brands_total, rng)
    brand_price_tier = rng.lognormal(0.0, 0.3, n_brands_total)

    median = np.array([leaf.median_price for leaf in leaves])[item_leaf]
    raw_price = median * brand_price_tier[item_brand] * rng.lognormal(0.0, 0.35, items)
    # Shops price at .99 above ten; cheap goods keep their cents.
    price = np.where(raw_price >= 10, np.ceil(raw_price) - 0.01, np.maximum(0.49, np.round(raw_price, 2)))

    log_price = np.log(price)
    price_z = np.zeros(items)
    for members in _group(item_leaf, n_leaves):
        spread = log_price[members].std()
        if spread > 0:
            price_z[members] = (log_price[members] - log_price[members].mean()) / spread

    log_pop = -_POPULARITY_EXPONENT * np.log1p(rng.permutation(items).astype(np.float64))
    in_stock = rng.random(items) < _IN_STOCK

    department_share = np.array([spec.share for spec in TAXONOMY.values()])
    leaf_share = department_share[leaf_department] * rng.lognormal(0.0, 0.5, n_leaves)
    leaf_share /= leaf_share.sum()

    items_by_leaf = _group(item_leaf, n_leaves)
    order = np.concatenate(items_by_leaf)
    key = np.empty(items)
    start = 0
    for leaf_index, members in enumerate(items_by_leaf):
        cdf = np.cumsum(np.exp(log_pop[members]))
        cdf /= cdf[-1]
        cdf[-1] = 1.0  # exactly, so that a draw below 1 never falls into the next leaf
        key[start : start + len(members)] = leaf_index + cdf
        start += len(members)

    return _Catalog(
        leaves=leaves,
        leaf_share=leaf_share,
        item_leaf=item_leaf,
        item_brand=item_brand,
        brand_names=brand_names,
        price=price,
        price_z=price_z,
        log_pop=log_pop,
        in_stock=in_stock,
        items_by_leaf=items_by_leaf,
        leaf_item_key=key,
        leaf_item_order=order,
    )


def _group(labels: IntArray, count: int) -> list[IntArray]:
    """Indices of each label 0..count-1, ascending within a label."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(count)]


def _sample_in_leaf(catalog: _Catalog, leaf: IntArray, rng: np.random.Generator) -> IntArray:
    """One item per entry of ``leaf``, drawn by popularity within that leaf."""
    position = np.searchsorted(catalog.leaf_item_key, leaf + rng.random(len(leaf)), side="right")
    return catalog.leaf_item_order[np.minimum(position, len(catalog.leaf_item_order) - 1)]


def _item_messages(catalog: _Catalog, rng: np.random.Generator) -> list[catalog_pb2.Item]:
    departments = list(TAXONOMY.values())
    adjective_draw = rng.random(len(catalog.item_leaf))
    value_draw = rng.random((len(catalog.item_leaf), 2))
    prices = catalog.price.tolist()
    in_stock = catalog.in_stock.tolist()
    messages = []
    for i, (leaf_index, brand_index) in enumerate(
        zip(catalog.item_leaf.tolist(), catalog.item_brand.tolist())
    ):
        leaf = catalog.leaves[leaf_index]
        department = departments[leaf.department]
        brand = catalog.brand_names[brand_index]
        adjective = department.adjectives[int(adjective_draw[i] * len(department.adjectives))]
        attributes = {
            name: values[int(value_draw[i, k] * len(values))]
            for k, (name, values) in enumerate(SCHEMAS[leaf.schema].items())
        }
        title = f"{brand} {adjective} {leaf.noun}"
        if attributes:
            title += ", " + next(iter(attributes.values()))
        description = (
            f"{adjective} {leaf.noun.lower()} by {brand}, from our {leaf.subcategory.replace('-', ' ')} range in "
            f"{DEPARTMENTS[leaf.department]}."
        )
        messages.append(
            catalog_pb2.Item(
                item_id=f"i{i + 1}",
                title=title,
                description=description,
                category=leaf.path,
                brand=brand,
                price=prices[i],
                in_stock=in_stock[i],
                attributes=attributes,
            )
        )
    return messages


# --- Users -------------------------------------------------------------------------------------------------


def _build_users(n: int, catalog: _Catalog, rng: np.random.Generator) -> _Users:
    n_leaves = len(catalog.leaves)
    age = rng.choice(len(AGE_BANDS), size=n, p=AGE_SHARE)
    gender = rng.choice(len(GENDERS), size=n, p=GENDER_SHARE)
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARE)

    # Lognormal activity: a long tail of heavy users over a majority of light ones.
    sigma = _ACTIVITY_SIGMA
    activity = rng.lognormal(math.log(_MEAN_EXTRA_SESSIONS) - sigma**2 / 2, sigma, n)
    sessions = 1 + rng.poisson(activity)
    # Loyalty follows activity, loosely.
    loyalty_score = np.log(activity) + rng.normal(0.0, 0.5, n)
    tier = np.searchsorted(np.quantile(loyalty_score, LOYALTY_QUANTILES), loyalty_score, side="right")

    # Department taste: Dirichlet (normalized Gammas) with a concentration leaning by age and gender.
    lean = np.ones((len(AGE_BANDS), len(GENDERS), len(DEPARTMENTS)))
    for a, band in enumerate(AGE_BANDS):
        for department, factor in AGE_LEAN[band].items():
            lean[a, :, DEPARTMENTS.index(department)] *= factor
    for g, name in enumerate(GENDERS):
        for department, factor in GENDER_LEAN.get(name, {}).items():
            lean[:, g, DEPARTMENTS.index(department)] *= factor
    concentration = 2.0 * np.array([spec.share for spec in TAXONOMY.values()]) * lean[age, gender]
    department_taste = rng.gamma(concentration)

    # Favourite leaves: drawn by department taste x the leaf's traffic within its department x gender lean.
    leaf_department = np.array([leaf.department for leaf in catalog.leaves])
    department_total = np.bincount(leaf_department, weights=catalog.leaf_share, minlength=len(DEPARTMENTS))
    within = catalog.leaf_share / department_total[leaf_department]
    leaf_lean = np.ones((len(GENDERS), n_leaves))
    for g, name in enumerate(GENDERS):
        for prefix, factor in GENDER_SUBCATEGORY_LEAN.get(name, {}).items():
            for j, leaf in enumerate(catalog.leaves):
                if leaf.path.startswith(prefix + "/"):
                    leaf_lean[g, j] *= factor
    favourite_leaf = np.empty((n, _FAVOURITE_LEAVES), dtype=np.int64)
    block = max(1, _ROWS_PER_BLOCK // (n_leaves * _FAVOURITE_LEAVES))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        # The tiny floor keeps a row drawable when every Gamma of its departments underflowed to zero.
        weights = department_taste[lo:hi, leaf_department] * within * leaf_lean[gender[lo:hi]] + 1e-12
        cdf = np.cumsum(weights, axis=1)
        draws = rng.random((hi - lo, _FAVOURITE_LEAVES)) * cdf[:, -1:]
        favourite_leaf[lo:hi] = (draws[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    favourite_leaf = np.minimum(favourite_leaf, n_leaves - 1)
    favourite_cdf = np.cumsum(rng.dirichlet(np.full(_FAVOURITE_LEAVES, 0.7), size=n), axis=1)

    # Preferred brands: brands of popular items in the user's favourite leaves.
    slot = rng.integers(0, _FAVOURITE_LEAVES, size=(n, _PREFERRED_BRANDS))
    brand_leaf = np.take_along_axis(favourite_leaf, slot, axis=1).ravel()
    preferred_brand = catalog.item_brand[_sample_in_leaf(catalog, brand_leaf, rng)].reshape(
        n, _PREFERRED_BRANDS
    )

    return _Users(
        age=age,
        gender=gender,
        region=region,
        tier=tier,
        sessions=sessions,
        favourite_leaf=favourite_leaf,
        favourite_cdf=favourite_cdf,
        preferred_brand=preferred_brand,
        price_level=rng.normal(0.0, 0.7, n),
        price_width=rng.lognormal(0.0, 0.4, n),
        p_click=rng.beta(2, 6, n),
        p_search=rng.beta(2, 4, n),
        p_cart=rng.beta(1.5, 10, n),
        p_buy=rng.beta(3, 3, n),
        p_rebuy=rng.beta(2, 2, n),
    )


def _user_messages(users: _Users) -> list[users_pb2.User]:
    # Every generated customer consents: an unset Consent would make the whole shop non-personalized.
    consent = users_pb2.Consent(personalization=True, analytics=True)
    return [
        users_pb2.User(
            user_id=f"u{u + 1}",
            attributes={
                "age_band": AGE_BANDS[a],
                "gender": GENDERS[g],
                "loyalty_tier": LOYALTY_TIERS[t],
                "region": REGIONS[r],
            },
            consent=consent,
        )
        for u, (a, g, t, r) in enumerate(
            zip(users.age.tolist(), users.gender.tolist(), users.tier.tolist(), users.region.tolist())
        )
    ]


# --- Events ------------------------------------------------------------------------------------------------


def _build_events(
    users: _Users,
    catalog: _Catalog,
    rng: np.random.Generator,
    start_ms: int,
    end_ms: int,
    progress: bool,
) -> tuple[_EventRows, IntArray, list[str]]:
    """All events, sorted by time; with the user of each session and the query strings rows point into."""
    session_user = np.repeat(np.arange(len(users.sessions)), users.sessions)
    n_sessions = len(session_user)

    # Each session stays in one leaf: a favourite one, or now and then one drawn by traffic.
    slot = (rng.random(n_sessions)[:, None] >= users.favourite_cdf[session_user]).sum(axis=1)
    slot = np.minimum(slot, _FAVOURITE_LEAVES - 1)
    session_leaf = users.favourite_leaf[session_user, slot]
    explore = rng.random(n_sessions) < _EXPLORE
    session_leaf[explore] = rng.choice(len(catalog.leaves), size=int(explore.sum()), p=catalog.leaf_share)

    leaf_size = np.array([len(members) for members in catalog.items_by_leaf])
    n_views = np.minimum(
        1 + rng.poisson(_MEAN_EXTRA_VIEWS, n_sessions), np.minimum(_MAX_VIEWS, leaf_size[session_leaf])
    )
    viewed = _choose_views(users, catalog, session_user, session_leaf, rng, progress)

    # Flatten the views, session by session in viewing order.
    view_session, view_position = np.nonzero(np.arange(_MAX_VIEWS)[None, :] < n_views[:, None])
    view_item = viewed[view_session, view_position]
    view_user = session_user[view_session]
    n_rows = len(view_item)

    clicked = rng.random(n_rows) < users.p_click[view_user]
    carted = (rng.random(n_rows) < users.p_cart[view_user]) & catalog.in_stock[view_item]
    consumable = np.array([leaf.consumable for leaf in catalog.leaves])[catalog.item_leaf]
    # Consumables are bought one to five at a time, other goods one at a time with the odd pair.
    quantity = np.where(
        consumable[view_item], 1 + np.minimum(rng.poisson(0.5, n_rows), 4), 1 + (rng.random(n_rows) < 0.05)
    )
    removed = carted & (rng.random(n_rows) < _REMOVE)
    # A removal happens after some later view of the session (or right after the add).
    removed_after = view_position + np.floor(rng.random(n_rows) * (n_views[view_session] - view_position))
    kept = carted & ~removed
    checks_out = (np.bincount(view_session[kept], minlength=n_sessions) > 0) & (
        rng.random(n_sessions) < users.p_buy[session_user]
    )
    bought = kept & checks_out[view_session]

    searched = np.flatnonzero(rng.random(n_sessions) < users.p_search[session_user])
    queries = [""]
    query_index = _search_queries(searched, session_leaf, viewed[:, 0], catalog, rng, queries)

    def rows(
        mask: BoolArray, order: npt.NDArray[np.floating[Any]], event_type: int, with_quantity: bool
    ) -> _EventRows:
        count = int(mask.sum())
        return _EventRows(
            session=view_session[mask],
            order=order[mask].astype(np.float64),
            type=np.full(count, event_type),
            item=view_item[mask],
            quantity=quantity[mask] if with_quantity else np.zeros(count, dtype=np.int64),
            query=np.zeros(count, dtype=np.int64),
            ts=np.zeros(count, dtype=np.int64),
        )

    everything = np.ones(n_rows, dtype=bool)
    base = 3.0 * view_position
    session_rows = _EventRows.concat(
        [
            _EventRows(
                session=searched,
                order=np.zeros(len(searched)),
                type=np.full(len(searched), events_pb2.SEARCH),
                item=np.full(len(searched), -1),
                quantity=np.zeros(len(searched), dtype=np.int64),
                query=query_index,
                ts=np.zeros(len(searched), dtype=np.int64),
            ),
            rows(everything, base + 1, events_pb2.VIEW, False),
            rows(clicked, base + 2, events_pb2.CLICK, False),
            rows(carted, base + 3, events_pb2.ADD_TO_CART, True),
            rows(removed, 3.0 * removed_after + 3.5, events_pb2.REMOVE_FROM_CART, True),
            rows(bought, 3.0 * n_views[view_session] + 10 + view_position, events_pb2.PURCHASE, True),
        ]
    )
    session_rows = session_rows.take(np.lexsort((session_rows.order, session_rows.session)))
    _stamp(session_rows, n_sessions, rng, start_ms, end_ms)

    rebuys, session_user = _repurchases(session_rows, session_user, users, catalog, consumable, rng, end_ms)
    every = _EventRows.concat([session_rows, *rebuys])
    # Time order; ties (the rows of one checkout) keep their session order.
    every = every.take(np.lexsort((every.order, every.session, every.ts)))
    return every, session_user, queries


def _choose_views(
    users: _Users,
    catalog: _Catalog,
    session_user: IntArray,
    session_leaf: IntArray,
    rng: np.random.Generator,
    progress: bool,
) -> IntArray:
    """The items each session views, in viewing order, as a (sessions, _MAX_VIEWS) matrix padded with -1.

    Items are drawn without replacement with probability proportional to popularity x brand preference x price
    fit x the session's brand focus (Gumbel top-k, whose order is the order of sequential draws).
    """
    # The focus: the brand of a popular item of the leaf, or a preferred brand of the user that the leaf sells.
    focus = catalog.item_brand[_sample_in_leaf(catalog, session_leaf, rng)]
    preferred = users.preferred_brand[session_user, rng.integers(0, _PREFERRED_BRANDS, len(session_user))]
    sells_preferred = np.zeros(len(session_user), dtype=bool)
    sessions_by_leaf = _group(session_leaf, len(catalog.leaves))
    for members, sessions in zip(catalog.items_by_leaf, sessions_by_leaf):
        sells_preferred[sessions] = np.isin(preferred[sessions], catalog.item_brand[members])
    focus = np.where(sells_preferred, preferred, focus)
    focus[rng.random(len(session_user)) >= _BRAND_FOCUS] = -1

    viewed = np.full((len(session_user), _MAX_VIEWS), -1, dtype=np.int64)
    for leaf_sessions, members in tqdm(
        list(zip(sessions_by_leaf, catalog.items_by_leaf)), desc="sessions", unit="leaf", disable=not progress
    ):
        k = min(_MAX_VIEWS, len(members))
        block = max(1, _ROWS_PER_BLOCK // len(members))
        for lo in range(0, len(leaf_sessions), block):
            sessions = leaf_sessions[lo : lo + block]
            user = session_user[sessions]
            fit = (catalog.price_z[members][None, :] - users.price_level[user][:, None]) / users.price_width[
                user
            ][:, None]
            liked_brand = (
                users.preferred_brand[user][:, :, None] == catalog.item_brand[members][None, None, :]
            ).any(axis=1)
            focused = focus[sessions][:, None] == catalog.item_brand[members][None, :]
            keys = (
                catalog.log_pop[members][None, :]
                - 0.5 * fit**2
                + _BRAND_BOOST * liked_brand
                + _FOCUS_BOOST * focused
            )
            keys += rng.gumbel(size=keys.shape)
            top = (
                np.argpartition(-keys, k - 1, axis=1)[:, :k]
                if k < len(members)
                else np.argsort(-keys, axis=1)
            )
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
            viewed[sessions, :k] = members[top]
    return viewed


def _search_queries(
    searched: IntArray,
    session_leaf: IntArray,
    first_view: IntArray,
    catalog: _Catalog,
    rng: np.random.Generator,
    queries: list[str],
) -> IntArray:
    """The query of each searching session, as indices into ``queries`` (which grows with new strings)."""
    known = {q: i for i, q in enumerate(queries)}
    form = rng.choice(4, size=len(searched), p=[0.35, 0.25, 0.15, 0.25]).tolist()
    index = np.empty(len(searched), dtype=np.int64)
    for n, (session, kind) in enumerate(zip(searched.tolist(), form)):
        leaf = catalog.leaves[session_leaf[session]]
        noun = leaf.noun.lower()
        if kind == 0:
            query = leaf.slug.replace("-", " ")
        elif kind == 1:
            query = noun
        elif kind == 2:
            query = f"{leaf.subcategory.replace('-', ' ')} {noun}"
        else:
            query = f"{catalog.brand_names[catalog.item_brand[first_view[session]]].lower()} {noun}"
        if query not in known:
            known[query] = len(queries)
            queries.append(query)
        index[n] = known[query]
    return index


def _gaps(types: IntArray, rng: np.random.Generator) -> IntArray:
    """Milliseconds before each event, by its type: seconds to minutes."""
    median = np.zeros(max(_GAP_MEDIAN_S) + 1)
    for event_type, seconds in _GAP_MEDIAN_S.items():
        median[event_type] = seconds * 1000
    gaps = median[types] * rng.lognormal(0.0, 0.8, len(types))
    return np.clip(gaps, 1000, 600_000).astype(np.int64)


def _stamp(rows: _EventRows, n_sessions: int, rng: np.random.Generator, start_ms: int, end_ms: int) -> None:
    """Set ``rows.ts`` in place; the rows are sorted by session and order.

    Sessions start on a random day at a diurnal hour, pulled back when needed so that they end before
    ``end_ms``. A checkout's purchase rows share one timestamp.
    """
    gaps = _gaps(rows.type, rng)
    first = np.ones(len(rows.session), dtype=bool)
    first[1:] = rows.session[1:] != rows.session[:-1]
    same_checkout = np.zeros(len(rows.session), dtype=bool)
    same_checkout[1:] = (
        (rows.type[1:] == events_pb2.PURCHASE) & (rows.type[:-1] == events_pb2.PURCHASE) & ~first[1:]
    )
    gaps[first | same_checkout] = 0
    elapsed = np.cumsum(gaps)
    session_start_row = np.flatnonzero(first)
    offset = elapsed - np.repeat(elapsed[session_start_row], np.diff(np.append(session_start_row, len(gaps))))
    duration = np.zeros(n_sessions, dtype=np.int64)
    np.maximum.at(duration, rows.session, offset)

    day = rng.integers(0, WINDOW_DAYS, n_sessions)
    hour = rng.choice(24, size=n_sessions, p=np.array(HOURLY) / sum(HOURLY))
    start = start_ms + day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n_sessions)
    start = np.minimum(start, end_ms - 1 - duration)
    rows.ts = start[rows.session] + offset


def _repurchases(
    rows: _EventRows,
    session_user: IntArray,
    users: _Users,
    catalog: _Catalog,
    consumable: BoolArray,
    rng: np.random.Generator,
    end_ms: int,
) -> tuple[list[_EventRows], IntArray]:
    """Repeat purchases of consumables: view, cart and buy the same item again once it has run out.

    Each repeat purchase can seed another, until the next one would fall after ``end_ms``. Returns the new
    rows (one group per round) and ``session_user`` extended with the new sessions.
    """
    replenish_days = np.array(
        [list(TAXONOMY.values())[leaf.department].replenish_days for leaf in catalog.leaves]
    )
    seeds = (rows.type == events_pb2.PURCHASE) & (rows.item >= 0)
    seeds[seeds] &= consumable[rows.item[seeds]]
    user = session_user[rows.session[seeds]]
    item, ts, quantity = rows.item[seeds], rows.ts[seeds], rows.quantity[seeds]
    rounds: list[_EventRows] = []
    while len(item):
        days = replenish_days[catalog.item_leaf[item]] * quantity * rng.lognormal(0.0, 0.3, len(item))
        start = ts + (days * DAY_MS).astype(np.int64)
        # Room for the short session before the end; the item must still be on sale.
        again = (
            (rng.random(len(item)) < users.p_rebuy[user])
            & (start < end_ms - HOUR_MS)
            & catalog.in_stock[item]
        )
        user, item, start = user[again], item[again], start[again]
        count = len(item)
        if count == 0:
            break
        session = len(session_user) + np.arange(count)
        session_user = np.concatenate([session_user, user])
        quantity = 1 + np.minimum(rng.poisson(0.5, count), 4)
        types = np.repeat([[events_pb2.VIEW, events_pb2.ADD_TO_CART, events_pb2.PURCHASE]], count, axis=0)
        gaps = _gaps(types.ravel(), rng).reshape(count, 3)
        gaps[:, 0] = 0
        ts_rows = start[:, None] + np.cumsum(gaps, axis=1)
        rounds.append(
            _EventRows(
                session=np.repeat(session, 3),
                order=np.tile([1.0, 3.0, 10.0], count),
                type=types.ravel(),
                item=np.repeat(item, 3),
                quantity=np.stack([np.zeros(count, dtype=np.int64), quantity, quantity], axis=1).ravel(),
                query=np.zeros(3 * count, dtype=np.int64),
                ts=ts_rows.ravel(),
            )
        )
        ts = ts_rows[:, 2]
    return rounds, session_user


# --- Writing -----------------------------------------------------------------------------------------------


def _write_atomically(path: Path, write: Any) -> None:
    """Write through ``write(file)`` to a temporary name, then rename: readers never see half a file."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as f:
        write(f)
    os.replace(temporary, path)


def _write_jsonl(path: Path, messages: Iterable[Message]) -> None:
    def write(f: Any) -> None:
        for message in messages:
            # Defaults printed too ("in_stock": false), so the JSON reads plainly to tools other than protobuf.
            data = json_format.MessageToDict(
                message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            if "attributes" in data:
                # Map order is not defined by protobuf; sorting keeps the files byte-identical across runs.
                data["attributes"] = dict(sorted(data["attributes"].items()))
            f.write(json.dumps(data, ensure_ascii=False) + "\n")

    _write_atomically(path, write)


def _write_events(
    path: Path,
    rows: _EventRows,
    session_user: IntArray,
    queries: list[str],
    catalog: _Catalog,
    progress: bool,
) -> None:
    """Write ``events.csv``; event ids count up in file order and session ids in order of first event."""
    n = len(rows.ts)
    # Number sessions by their first event so that ids read in time order too.
    sessions, first_row = np.unique(rows.session, return_index=True)
    session_number = np.zeros(len(session_user), dtype=np.int64)
    session_number[sessions[np.argsort(first_row, kind="stable")]] = np.arange(1, len(sessions) + 1)

    type_names = [""] * (max(events_pb2.EventType.values()) + 1)
    for name, value in events_pb2.EventType.items():
        type_names[value] = name
    item_ids = [""] + [f"i{i + 1}" for i in range(len(catalog.price))]
    prices = [""] + [f"{p:.2f}" for p in catalog.price.tolist()]
    priced = (rows.type == events_pb2.ADD_TO_CART) | (rows.type == events_pb2.PURCHASE)
    price_index = np.where(priced, rows.item + 1, 0)
    user_ids = [f"u{u + 1}" for u in range(int(session_user.max(initial=-1)) + 1)]

    def write(f: Any) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        chunk = 200_000
        with tqdm(total=n, desc="events.csv", unit="event", unit_scale=True, disable=not progress) as bar:
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                users = session_user[rows.session[lo:hi]].tolist()
                writer.writerows(
                    zip(
                        [f"e{i}" for i in range(lo + 1, hi + 1)],
                        [type_names[t] for t in rows.type[lo:hi].tolist()],
                        [user_ids[u] for u in users],
                        [f"s{s}" for s in session_number[rows.session[lo:hi]].tolist()],
                        [item_ids[i] for i in (rows.item[lo:hi] + 1).tolist()],
                        rows.ts[lo:hi].tolist(),
                        [prices[i] for i in price_index[lo:hi].tolist()],
                        [str(q) if q else "" for q in rows.quantity[lo:hi].tolist()],
                        [queries[q] for q in rows.query[lo:hi].tolist()],
                        [""] * (hi - lo),
                    )
                )
                bar.update(hi - lo)

    _write_atomically(path, write)


# --- Command line ------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``python -m trainer generate``."""
    parser.add_argument("--users", type=_positive_int, required=True, help="number of users")
    parser.add_argument("--items", type=_positive_int, required=True, help="number of catalog items")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the shop to")
    parser.add_argument(
        "--end-ts-ms",
        type=int,
        default=DEFAULT_END_TS_MS,
        help=f"end of the 30-day window, ms since the epoch (default {DEFAULT_END_TS_MS}, 2026-01-01T00:00Z)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the shop the arguments describe and print its meta as JSON."""
    meta = generate_shop(args.users, args.items, args.seed, args.out, end_ts_ms=args.end_ts_ms)
    print(json.dumps(meta))
    return 0
