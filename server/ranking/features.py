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

from feature_worker.decay import scale_at
from feature_worker.fold import FoldConfig
from feature_worker.state import UserState
from server.retrieval.candidates import ABSENT_RANK, BRAND, CONTENT, COVISITATION, SOURCES, CandidateSet
from server.retrieval.item_index import Floats, Ints, ItemIndex, rows_of
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
) -> npt.NDArray[np.float32]:
    """``[len(pool), N_FEATURES]`` float32, columns as `FEATURES` names them."""
    n = len(pool)
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    pos = pool.positions
    k = len(SOURCES)
    out[:, :k] = pool.scores.T
    ranks = pool.ranks
    out[:, k : 2 * k] = np.where(ranks < ABSENT_RANK, 1.0 / (1.0 + ranks), 0.0).T
    col = _COLUMN
    out[:, col["covis_latest"]] = pool.extra_column("covis_latest")
    out[:, col["learned_logit"]] = pool.extra_column("learned_logit")
    for name, source in (("covis_seed", COVISITATION), ("content_seed", CONTENT), ("brand_seed", BRAND)):
        arg = pool.args[source]
        out[:, col[name]] = np.where(arg >= 0, 1.0 / (1.0 + np.maximum(arg, 0)), 0.0)
    out[:, col["sources"]] = (pool.scores > 0.0).sum(axis=0)
    out[:, col["log_popularity"]] = np.log1p(lists.popularity_at[pos]) if len(lists.popularity_at) else 0.0
    out[:, col["log_trending"]] = np.log1p(lists.trending_at[pos]) if len(lists.trending_at) else 0.0

    leaf, top, brand, price = index.leaf[pos], index.top[pos], index.brand[pos], index.price[pos]
    if user is not None:
        out[:, col["category_affinity"]] = _affinity(user.category_affinity, index.category_id, leaf)
        out[:, col["top_category_affinity"]] = _affinity(user.category_affinity, index.category_id, top)
        out[:, col["brand_affinity"]] = _affinity(user.brand_affinity, index.brand_id, brand)
        if user.cart:
            out[rows_of(pos, np.sort(index.positions(user.cart_items()))), col["in_cart"]] = 1.0
        if user.purchases:
            out[rows_of(pos, np.sort(index.positions(user.purchases, len(user.purchases)))), col["bought_before"]] = 1.0
        engagement = user.engagement * scale_at(clock_ms, _HALF_LIFE_MS)
        out[:, col["log_engagement"]] = math.log1p(max(engagement, 0.0)) if math.isfinite(engagement) else 0.0
    view = UserView.of(user, index)
    out[:, col["log_history"]] = math.log1p(len(view.positions))
    known = view.positions[view.positions >= 0]
    out[:, col["has_price"]] = price > 0
    if len(known):
        recent_price = index.price[known]
        priced = recent_price[recent_price > 0]
        if len(priced):
            usual = float(np.median(priced))
            out[:, col["log_price_ratio"]] = np.where(price > 0, np.log((price + 1.0) / (usual + 1.0)), 0.0)
        known_ts = view.ts_ms[view.positions >= 0]
        out[:, col["category_hours"]], out[:, col["category_share"]] = _touched(
            index.leaf[known], known_ts, leaf, clock_ms
        )
        out[:, col["brand_hours"]], out[:, col["brand_share"]] = _touched(index.brand[known], known_ts, brand, clock_ms)
        latest = known[0]
        out[:, col["same_category_as_latest"]] = (leaf == index.leaf[latest]) & (leaf >= 0)
        out[:, col["same_brand_as_latest"]] = (brand == index.brand[latest]) & (brand >= 0)
    else:
        out[:, col["category_hours"]] = NEVER
        out[:, col["brand_hours"]] = NEVER
    context = [s.position for s in seeds if s.is_context and s.position >= 0]
    if context:
        c = np.array(context, dtype=np.int64)
        out[:, col["same_category_as_context"]] = np.isin(leaf, index.leaf[c][index.leaf[c] >= 0])
        out[:, col["same_brand_as_context"]] = np.isin(brand, index.brand[c][index.brand[c] >= 0])
    return out


def _affinity(affinity: dict[str, float], ids: dict[str, int], groups: Ints) -> Floats:
    """The user's affinity for each candidate's group, over the user's strongest (0 where none)."""
    if not affinity:
        return np.zeros(len(groups))
    best = max(affinity.values())
    if not best > 0.0:
        return np.zeros(len(groups))
    keys = [ids.get(name, -1) for name in affinity]
    table = dict(zip(keys, affinity.values()))
    table.pop(-1, None)
    if not table:
        return np.zeros(len(groups))
    codes = np.fromiter(table.keys(), dtype=np.int64, count=len(table))
    values = np.fromiter(table.values(), dtype=np.float64, count=len(table)) / best
    order = np.argsort(codes)
    codes, values = codes[order], values[order]
    at = np.searchsorted(codes, groups)
    at = np.minimum(at, len(codes) - 1)
    return np.where((codes[at] == groups) & (groups >= 0), values[at], 0.0)


def _touched(
    recent_groups: Ints, recent_ts: npt.NDArray[np.int64], groups: Ints, clock_ms: int
) -> tuple[Floats, Floats]:
    """For each candidate's group: log1p(hours since the user last touched it) and the share of the user's
    recent interactions in it. ``recent_*`` are newest first."""
    n = len(groups)
    hours = np.full(n, NEVER)
    share = np.zeros(n)
    valid = recent_groups >= 0
    if not valid.any():
        return hours, share
    recent_groups, recent_ts = recent_groups[valid], recent_ts[valid]
    codes, first, counts = np.unique(recent_groups, return_index=True, return_counts=True)
    at = np.minimum(np.searchsorted(codes, groups), len(codes) - 1)
    hit = (codes[at] == groups) & (groups >= 0)
    # The newest touch of each group is its first occurrence (newest first).
    age_h = np.maximum(clock_ms - recent_ts[first], 0) / HOUR_MS
    hours = np.where(hit, np.log1p(age_h[at]), NEVER)
    share = np.where(hit, counts[at] / len(recent_groups), 0.0)
    return hours, share
