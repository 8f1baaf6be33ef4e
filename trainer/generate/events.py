"""The events: sessions in a leaf, their views, clicks, searches, carts and purchases, repurchases, and time
stamps."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from protos.aisle.v1 import events_pb2
from trainer.generate.catalog import group, sample_in_leaf
from trainer.generate.model import (
    BRAND_BOOST,
    BRAND_FOCUS,
    DAY_MS,
    EXPLORE,
    FAVOURITE_LEAVES,
    FOCUS_BOOST,
    GAP_MEDIAN_S,
    HOUR_MS,
    MAX_VIEWS,
    MEAN_EXTRA_VIEWS,
    PREFERRED_BRANDS,
    REMOVE,
    ROWS_PER_BLOCK,
    WINDOW_DAYS,
    BoolArray,
    CatalogArrays,
    EventRows,
    IntArray,
    UserArrays,
)
from trainer.taxonomy import (
    HOURLY,
    TAXONOMY,
)


def build_events(
    users: UserArrays,
    catalog: CatalogArrays,
    rng: np.random.Generator,
    start_ms: int,
    end_ms: int,
    progress: bool,
) -> tuple[EventRows, IntArray, list[str]]:
    """All events, sorted by time; with the user of each session and the query strings rows point into."""
    session_user = np.repeat(np.arange(len(users.sessions)), users.sessions)
    n_sessions = len(session_user)

    # Each session stays in one leaf: a favourite one, or now and then one drawn by traffic.
    slot = (rng.random(n_sessions)[:, None] >= users.favourite_cdf[session_user]).sum(axis=1)
    slot = np.minimum(slot, FAVOURITE_LEAVES - 1)
    session_leaf = users.favourite_leaf[session_user, slot]
    explore = rng.random(n_sessions) < EXPLORE
    session_leaf[explore] = rng.choice(len(catalog.leaves), size=int(explore.sum()), p=catalog.leaf_share)

    leaf_size = np.array([len(members) for members in catalog.items_by_leaf])
    n_views = np.minimum(
        1 + rng.poisson(MEAN_EXTRA_VIEWS, n_sessions), np.minimum(MAX_VIEWS, leaf_size[session_leaf])
    )
    viewed = _choose_views(users, catalog, session_user, session_leaf, rng, progress)

    # Flatten the views, session by session in viewing order.
    view_session, view_position = np.nonzero(np.arange(MAX_VIEWS)[None, :] < n_views[:, None])
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
    removed = carted & (rng.random(n_rows) < REMOVE)
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
    ) -> EventRows:
        count = int(mask.sum())
        return EventRows(
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
    session_rows = EventRows.concat(
        [
            EventRows(
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
    every = EventRows.concat([session_rows, *rebuys])
    # Time order; ties (the rows of one checkout) keep their session order.
    every = every.take(np.lexsort((every.order, every.session, every.ts)))
    return every, session_user, queries


def _choose_views(
    users: UserArrays,
    catalog: CatalogArrays,
    session_user: IntArray,
    session_leaf: IntArray,
    rng: np.random.Generator,
    progress: bool,
) -> IntArray:
    """The items each session views, in viewing order, as a (sessions, MAX_VIEWS) matrix padded with -1.

    Items are drawn without replacement with probability proportional to popularity x brand preference x price
    fit x the session's brand focus (Gumbel top-k, whose order is the order of sequential draws).
    """
    # The focus: the brand of a popular item of the leaf, or a preferred brand of the user that the leaf sells.
    focus = catalog.item_brand[sample_in_leaf(catalog, session_leaf, rng)]
    preferred = users.preferred_brand[session_user, rng.integers(0, PREFERRED_BRANDS, len(session_user))]
    sells_preferred = np.zeros(len(session_user), dtype=bool)
    sessions_by_leaf = group(session_leaf, len(catalog.leaves))
    for members, sessions in zip(catalog.items_by_leaf, sessions_by_leaf):
        sells_preferred[sessions] = np.isin(preferred[sessions], catalog.item_brand[members])
    focus = np.where(sells_preferred, preferred, focus)
    focus[rng.random(len(session_user)) >= BRAND_FOCUS] = -1

    viewed = np.full((len(session_user), MAX_VIEWS), -1, dtype=np.int64)
    for leaf_sessions, members in tqdm(
        list(zip(sessions_by_leaf, catalog.items_by_leaf)), desc="sessions", unit="leaf", disable=not progress
    ):
        k = min(MAX_VIEWS, len(members))
        block = max(1, ROWS_PER_BLOCK // len(members))
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
                + BRAND_BOOST * liked_brand
                + FOCUS_BOOST * focused
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
    catalog: CatalogArrays,
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
    median = np.zeros(max(GAP_MEDIAN_S) + 1)
    for event_type, seconds in GAP_MEDIAN_S.items():
        median[event_type] = seconds * 1000
    gaps = median[types] * rng.lognormal(0.0, 0.8, len(types))
    return np.clip(gaps, 1000, 600_000).astype(np.int64)


def _stamp(rows: EventRows, n_sessions: int, rng: np.random.Generator, start_ms: int, end_ms: int) -> None:
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
    rows: EventRows,
    session_user: IntArray,
    users: UserArrays,
    catalog: CatalogArrays,
    consumable: BoolArray,
    rng: np.random.Generator,
    end_ms: int,
) -> tuple[list[EventRows], IntArray]:
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
    rounds: list[EventRows] = []
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
            EventRows(
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
