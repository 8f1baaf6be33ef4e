"""The ranker's features for every (user, candidate) pair of one request, as one float32 matrix.

One function, `feature_matrix`, used by the server before it ranks and by `trainer train` when it builds the
ranker's training lists (through the same `Recommender.candidates`), so the model is trained on exactly what
it is served: no training/serving skew. Every feature reads the request's inputs only (the user's state as
the fold wrote it, the item counters of the top lists, the catalog), so a training list built from the state
before a target cannot see the target (``tests/trainer/test_ranker_data.py`` holds that).

Columns are named by `FEATURES`; a ranker records the names it was trained on and the server selects them by
name, so adding a feature here never breaks a served bundle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from feature_worker.decay import scale_at
from feature_worker.fold import FoldConfig
from feature_worker.state import UserState
from server.retrieval.candidates import ABSENT_RANK, BRAND, CONTENT, COVISITATION, SOURCES, CandidateSet
from server.retrieval.item_index import Floats, Ints, ItemIndex
from server.retrieval.item_rows import (
    ITEM_BRAND,
    ITEM_LEAF,
    ITEM_LOG_POPULARITY,
    ITEM_LOG_TRENDING,
    ITEM_PRICE,
    ITEM_TOP,
)
from server.retrieval.sources import Seed
from server.retrieval.toplists import TopLists

HOUR_MS = 3_600_000
_HALF_LIFE_MS = FoldConfig().half_life_ms
#: log1p(hours) given to "never": about 11 years.
NEVER = math.log1p(1e5)

FEATURES: tuple[str, ...] = (
    *(f"{s}_score" for s in SOURCES),
    *(f"{s}_rank" for s in SOURCES),
    "covis_latest",
    "learned_logit",
    "covis_seed",
    "content_seed",
    "brand_seed",
    "sources",
    "log_popularity",
    "log_trending",
    "category_affinity",
    "top_category_affinity",
    "brand_affinity",
    "log_price_ratio",
    "has_price",
    "category_hours",
    "brand_hours",
    "category_share",
    "brand_share",
    "in_cart",
    "bought_before",
    "same_category_as_latest",
    "same_brand_as_latest",
    "same_category_as_context",
    "same_brand_as_context",
    "log_history",
    "log_engagement",
)
N_FEATURES = len(FEATURES)
_COLUMN = {name: i for i, name in enumerate(FEATURES)}


@dataclass(frozen=True, slots=True)
class UserView:
    """The parts of a user's state the features read, as arrays over the user's recent interactions."""

    #: Positions of the recent items (-1: not in the index), newest first, and when (ms).
    positions: Ints
    ts_ms: npt.NDArray[np.int64]

    @classmethod
    def of(cls, user: UserState | None, index: ItemIndex) -> UserView:
        if user is None or not user.recent:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        recent = user.recent[::-1]
        n = len(recent)
        positions = index.positions((item for _, _, item in recent), n)
        ts = np.fromiter((ts for ts, _, _ in recent), dtype=np.int64, count=n)
        return cls(positions, ts)


def feature_matrix(
    pool: CandidateSet,
    index: ItemIndex,
    lists: TopLists,
    user: UserState | None,
    seeds: Sequence[Seed],
    clock_ms: int,
    rows: Ints | None = None,
) -> npt.NDArray[np.float32]:
    """``[len(rows), N_FEATURES]`` float32 (every row of ``pool`` when ``rows`` is None), columns as `FEATURES`
    names them. A row's features do not depend on which other rows are asked for.

    Python gathers the request's inputs as arrays (the user's affinities over the index's category and brand
    numbers, the recent items' positions, cart and purchases); one compiled pass (`_fill`) writes every cell.
    """
    if rows is None:
        rows = np.arange(len(pool), dtype=np.int64)
    out = np.zeros((len(rows), N_FEATURES), dtype=np.float32)
    if len(rows) == 0:
        return out
    view = UserView.of(user, index)
    no_floats = np.zeros(0)
    category_affinity = brand_affinity = no_floats
    cart = bought = _NO_INTS
    engagement = 0.0
    if user is not None:
        category_affinity = _dense_affinity(
            user.category_affinity, index.category_id, len(index.category_names)
        )
        brand_affinity = _dense_affinity(user.brand_affinity, index.brand_id, len(index.brand_names))
        if user.cart:
            cart = index.positions(user.cart_items())
        if user.purchases:
            bought = index.positions(user.purchases, len(user.purchases))
        decayed = user.engagement * scale_at(clock_ms, _HALF_LIFE_MS)
        engagement = math.log1p(max(decayed, 0.0)) if math.isfinite(decayed) else 0.0
    context = np.array([s.position for s in seeds if s.is_context and s.position >= 0], dtype=np.int64)
    items = lists.items
    if len(items) != len(index):
        raise ValueError(f"the lists' item rows are for {len(items)} items, the index has {len(index)}")
    _fill(
        out,
        rows,
        pool.positions,
        pool.scores,
        pool.ranks,
        pool.args,
        pool.extra_column("covis_latest"),
        pool.extra_column("learned_logit"),
        items,
        user is not None,
        category_affinity,
        brand_affinity,
        cart,
        bought,
        engagement,
        view.positions,
        view.ts_ms,
        context,
        clock_ms,
    )
    return out


_NO_INTS = np.zeros(0, dtype=np.int64)


def _dense_affinity(affinity: dict[str, float], ids: dict[str, int], size: int) -> Floats:
    """The user's affinity per group number (``size`` of them) over the user's strongest (0 where none, all 0
    when the strongest is not positive)."""
    dense = np.zeros(size)
    if not affinity:
        return dense
    best = max(affinity.values())
    if not best > 0.0:
        return dense
    for name, value in affinity.items():
        group = ids.get(name, -1)
        if group >= 0:
            dense[group] = value / best
    return dense


# Column numbers for the compiled pass (numba reads module globals as constants).
_K = len(SOURCES)
_COVIS_LATEST, _LEARNED_LOGIT = _COLUMN["covis_latest"], _COLUMN["learned_logit"]
_COVIS_SEED, _CONTENT_SEED, _BRAND_SEED = (
    _COLUMN["covis_seed"],
    _COLUMN["content_seed"],
    _COLUMN["brand_seed"],
)
_SOURCES, _LOG_POPULARITY, _LOG_TRENDING = (
    _COLUMN["sources"],
    _COLUMN["log_popularity"],
    _COLUMN["log_trending"],
)
_CATEGORY_AFFINITY, _TOP_AFFINITY = _COLUMN["category_affinity"], _COLUMN["top_category_affinity"]
_BRAND_AFFINITY, _PRICE_RATIO, _HAS_PRICE = (
    _COLUMN["brand_affinity"],
    _COLUMN["log_price_ratio"],
    _COLUMN["has_price"],
)
_CATEGORY_HOURS, _BRAND_HOURS = _COLUMN["category_hours"], _COLUMN["brand_hours"]
_CATEGORY_SHARE, _BRAND_SHARE = _COLUMN["category_share"], _COLUMN["brand_share"]
_IN_CART, _BOUGHT = _COLUMN["in_cart"], _COLUMN["bought_before"]
_SAME_CATEGORY_LATEST, _SAME_BRAND_LATEST = (
    _COLUMN["same_category_as_latest"],
    _COLUMN["same_brand_as_latest"],
)
_SAME_CATEGORY_CONTEXT, _SAME_BRAND_CONTEXT = (
    _COLUMN["same_category_as_context"],
    _COLUMN["same_brand_as_context"],
)
_LOG_HISTORY, _LOG_ENGAGEMENT = _COLUMN["log_history"], _COLUMN["log_engagement"]
_ABSENT = ABSENT_RANK
_COVIS, _CONTENT, _BRAND_SOURCE = COVISITATION, CONTENT, BRAND


@njit(cache=True, nogil=True)
def _seed_weight(arg: int) -> float:  # pragma: no cover - compiled
    """The seed's number as a weight: 1 for the first seed, 1/2 for the second, ...; 0 for none."""
    return 1.0 / (1.0 + arg) if arg >= 0 else 0.0


@njit(cache=True, nogil=True)
def _touches(
    items: Floats, column: int, known: Ints, known_ts: npt.NDArray[np.int64], clock_ms: int
) -> tuple[Floats, Floats]:  # pragma: no cover - compiled
    """Per group number (the ``column`` of `item_rows`: leaf category or brand) up to the largest among the
    recent items: log1p(hours since the user last touched the group), `NEVER` where never, and the share of
    the user's recent items (those with a group) in it. Once per group, not per candidate row."""
    size = 0
    for p in known:
        size = max(size, int(items[p, column]) + 1)
    last = np.full(size, -1, dtype=np.int64)
    count = np.zeros(size, dtype=np.int64)
    total = 0
    for j in range(len(known)):
        g = int(items[known[j], column])
        if g < 0:
            continue
        total += 1
        if last[g] < 0:  # newest first: the first touch seen is the newest
            last[g] = known_ts[j]
        count[g] += 1
    hours = np.full(size, NEVER)
    share = np.zeros(size)
    for g in range(size):
        if last[g] >= 0:
            hours[g] = np.log1p(max(clock_ms - last[g], 0) / HOUR_MS)
            share[g] = count[g] / total
    return hours, share


@njit(
    "void(f4[:, :], i8[:], i8[:], f8[:, :], i8[:, :], i8[:, :], f8[:], f8[:], f8[:, ::1], b1, f8[:], f8[:],"
    " i8[:], i8[:], f8, i8[:], i8[:], i8[:], i8)",
    cache=True,
    nogil=True,
)
def _fill(  # pragma: no cover - compiled; tests call it through `feature_matrix`
    out: npt.NDArray[np.float32],
    rows: Ints,
    pos: Ints,
    scores: Floats,
    ranks: Ints,
    args: Ints,
    covis_latest: Floats,
    learned_logit: Floats,
    items: Floats,
    has_user: bool,
    category_affinity: Floats,
    brand_affinity: Floats,
    cart: Ints,
    bought: Ints,
    engagement: float,
    recent: Ints,
    recent_ts: npt.NDArray[np.int64],
    context: Ints,
    clock_ms: int,
) -> None:
    """Every cell of ``out`` (zeros on entry; its row i is candidate row ``rows[i]``). ``items``: `item_rows`
    of the index; ``recent``/``recent_ts``: the user's recent items' positions (-1: not in the index) and
    times, newest first; ``context``: the context items' positions."""
    # The user's recent items in the index: the usual price, and per category/brand the newest touch and count.
    known = recent[recent >= 0]
    known_ts = recent_ts[recent >= 0]
    usual = -1.0
    priced = np.empty(len(known))
    n_priced = 0
    for j in range(len(known)):
        if items[known[j], ITEM_PRICE] > 0:
            priced[n_priced] = items[known[j], ITEM_PRICE]
            n_priced += 1
    if n_priced:
        usual = np.median(priced[:n_priced])
    leaf_hours, leaf_share = _touches(items, ITEM_LEAF, known, known_ts, clock_ms)
    brand_hours, brand_share = _touches(items, ITEM_BRAND, known, known_ts, clock_ms)
    latest_leaf = np.int64(items[known[0], ITEM_LEAF]) if len(known) else -1
    latest_brand = np.int64(items[known[0], ITEM_BRAND]) if len(known) else -1
    context_leaves = np.empty(len(context), dtype=np.int64)
    context_brands = np.empty(len(context), dtype=np.int64)
    for j in range(len(context)):
        context_leaves[j] = np.int64(items[context[j], ITEM_LEAF])
        context_brands[j] = np.int64(items[context[j], ITEM_BRAND])
    log_history = np.log1p(len(recent))
    # The sources' columns a source at a time: each pass reads one row of ``scores`` and ``ranks`` in order (a
    # quarter less time than eight scattered reads per candidate).
    for s in range(_K):
        for i in range(len(rows)):
            r = rows[i]
            score = scores[s, r]
            out[i, s] = score
            if score > 0.0:
                out[i, _SOURCES] += 1.0
            rank = ranks[s, r]
            if rank < _ABSENT:
                out[i, _K + s] = 1.0 / (1.0 + rank)
    for i in range(len(rows)):
        r = rows[i]
        p = pos[r]
        row = out[i]
        row[_COVIS_LATEST] = covis_latest[r]
        row[_LEARNED_LOGIT] = learned_logit[r]
        row[_COVIS_SEED] = _seed_weight(args[_COVIS, r])
        row[_CONTENT_SEED] = _seed_weight(args[_CONTENT, r])
        row[_BRAND_SEED] = _seed_weight(args[_BRAND_SOURCE, r])
        # One cache line: every number of the candidate's item.
        row[_LOG_POPULARITY] = items[p, ITEM_LOG_POPULARITY]
        row[_LOG_TRENDING] = items[p, ITEM_LOG_TRENDING]
        leaf, top, brand = int(items[p, ITEM_LEAF]), int(items[p, ITEM_TOP]), int(items[p, ITEM_BRAND])
        price = items[p, ITEM_PRICE]
        if has_user:
            if len(category_affinity):
                if leaf >= 0:
                    row[_CATEGORY_AFFINITY] = category_affinity[leaf]
                if top >= 0:
                    row[_TOP_AFFINITY] = category_affinity[top]
            if len(brand_affinity) and brand >= 0:
                row[_BRAND_AFFINITY] = brand_affinity[brand]
            row[_LOG_ENGAGEMENT] = engagement
            for c in cart:
                if c == p:
                    row[_IN_CART] = 1.0
            for b in bought:
                if b == p:
                    row[_BOUGHT] = 1.0
        row[_LOG_HISTORY] = log_history
        row[_HAS_PRICE] = 1.0 if price > 0 else 0.0
        if usual >= 0.0 and price > 0:
            row[_PRICE_RATIO] = np.log((price + 1.0) / (usual + 1.0))
        touched = 0 <= leaf < len(leaf_hours)
        row[_CATEGORY_HOURS] = leaf_hours[leaf] if touched else NEVER
        row[_CATEGORY_SHARE] = leaf_share[leaf] if touched else 0.0
        touched = 0 <= brand < len(brand_hours)
        row[_BRAND_HOURS] = brand_hours[brand] if touched else NEVER
        row[_BRAND_SHARE] = brand_share[brand] if touched else 0.0
        if len(known):
            row[_SAME_CATEGORY_LATEST] = 1.0 if leaf >= 0 and leaf == latest_leaf else 0.0
            row[_SAME_BRAND_LATEST] = 1.0 if brand >= 0 and brand == latest_brand else 0.0
        for c in context_leaves:
            if c >= 0 and c == leaf:
                row[_SAME_CATEGORY_CONTEXT] = 1.0
        for c in context_brands:
            if c >= 0 and c == brand:
                row[_SAME_BRAND_CONTEXT] = 1.0
