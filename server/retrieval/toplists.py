"""Ranked item lists derived from the shop-wide counters: popular (overall, per category and per brand) and
trending (overall and per category).

The server rebuilds them once a second off the request path (`TopLists.build` from a background task)
and requests read the last build. A build must stay cheap even so: it runs in a thread, but holds the
GIL while it runs Python code, and every request waits for the GIL meanwhile (the tail of the freshness
figure). So the ranking is done by numpy over arrays indexed by catalog position: one sort for each of
the two scores, one for all the category and brand lists at once, and Python only to read the scores in
and the lists out. What depends only on the catalog (positions, id order, who belongs to which category
and brand) is computed once per catalog version (`ItemIndex`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from feature_worker.catalog import Catalog
from feature_worker.stores.base import ItemStats
from server.retrieval.item_index import Floats, Ints, ItemIndex
from server.retrieval.item_rows import COLUMNS, item_rows

#: Items kept per list: enough for candidates and backfill, small enough to rebuild often.
LIST_LENGTH = 200


@dataclass(frozen=True, slots=True)
class GroupLists:
    """Every group's list in one array, by the group's number (a brand's or a category's in the `ItemIndex`):
    group ``g``'s list is ``members[starts[g]:ends[g]]``, empty for a group without one. The compiled seeded
    sources read these, where a dict of arrays by name would cost a lookup and a Python call per seed."""

    starts: Ints
    ends: Ints
    members: Ints

    def of(self, group: int) -> Ints:
        """Group ``group``'s list (empty for a number outside these lists, such as -1)."""
        if not 0 <= group < len(self.starts):
            return self.members[:0]
        return self.members[self.starts[group] : self.ends[group]]


def _no_groups() -> GroupLists:
    empty = np.zeros(0, dtype=np.int64)
    return GroupLists(empty, empty, empty)


@dataclass(slots=True)
class TopLists:
    """Item ids best first, with the score each list was sorted by (in stock or not: rules decide).

    Lists are positions in ``index`` (``*_pos``, names through `ItemIndex.names` where an answer needs them);
    scores are arrays over positions (``popularity_at``, ``trending_at``, 0 where an item has none), and
    ``popularity`` by id for the backfill's reasons.
    """

    popularity: dict[str, float] = field(default_factory=dict)
    clock_ms: int = 0
    index: ItemIndex | None = None
    popular_pos: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Each category's and each brand's popular items, by number (`GroupLists`; by name: `popular_in`).
    popular_by_category: GroupLists = field(default_factory=_no_groups)
    popular_by_brand: GroupLists = field(default_factory=_no_groups)
    #: Each category's trending items, by number (`GroupLists`).
    trending_by_category: GroupLists = field(default_factory=_no_groups)
    popularity_at: Floats = field(default_factory=lambda: np.zeros(0))
    trending_at: Floats = field(default_factory=lambda: np.zeros(0))
    #: Each item's numbers that the per-candidate passes read, one cache line per item (`item_rows`), the log1p
    #: of ``popularity_at`` and ``trending_at`` (ranker features) among them: computed once per build, not per row.
    items: Floats = field(default_factory=lambda: np.zeros((0, COLUMNS)))

    def popular_in(self, category: str) -> Ints:
        """The popular items of a category by its name (empty for one the index does not know)."""
        numbers = self.index.category_id if self.index is not None else {}
        return self.popular_by_category.of(numbers.get(category, -1))

    @classmethod
    def build(cls, stats: ItemStats, catalog: Catalog, length: int = LIST_LENGTH) -> TopLists:
        """Rank the catalog's items by popularity and trend; items outside the catalog are ignored.

        Every list is ordered by score, highest first, ties by item id; a category's or brand's list
        holds its first `length` items of that order, and only items that have the score (popularity,
        or a trend above 0).
        """
        index = ItemIndex.of(catalog)
        popularity = _scores(index, stats.popularity, positive=False)
        trending = _scores(index, stats.trending, positive=True)
        by_pop = _ranked(index, popularity)
        by_trend = _ranked(index, trending)
        category_lists = _grouped(index, by_pop, index.category_members, len(index.category_names), length)
        brand_lists = _grouped(index, by_pop, index.brand_members, len(index.brand_names), length)
        trending_by_category = _grouped(
            index, by_trend, index.category_members, len(index.category_names), length
        )
        popularity_at = np.nan_to_num(popularity[1], nan=0.0)
        trending_at = np.nan_to_num(trending[1], nan=0.0)
        return cls(
            popularity=_as_dict(index, popularity, stats.popularity),
            clock_ms=stats.clock_ms,
            index=index,
            popular_pos=by_pop[:length].copy(),
            popular_by_category=category_lists,
            popular_by_brand=brand_lists,
            trending_by_category=trending_by_category,
            popularity_at=popularity_at,
            trending_at=trending_at,
            items=item_rows(index, log1p_each(popularity_at), log1p_each(trending_at)),
        )


#: Scores of some items: (positions, the score at each position of the catalog, NaN where none).
_Scores = tuple[Ints, Floats]


def _scores(index: ItemIndex, values: Mapping[str, float], positive: bool) -> _Scores:
    """Scores of the index's items found in `values` (above 0 only, when `positive`)."""
    n = len(values)
    found = index.positions(values, n)
    weights = np.fromiter(values.values(), dtype=np.float64, count=n)
    keep = found >= 0
    if positive:
        keep &= weights > 0
    where = found[keep]
    score = np.full(len(index), np.nan)
    score[where] = weights[keep]
    return where, score


def _ranked(index: ItemIndex, scores: _Scores) -> Ints:
    """Positions of the scored items, best first, ties by id."""
    where, score = scores
    ranked: Ints = where[np.lexsort((index.id_rank[where], -score[where]))]
    return ranked


def _as_dict(index: ItemIndex, scores: _Scores, values: Mapping[str, float]) -> dict[str, float]:
    """`values` restricted to the scored items, in the same order (`values` itself when that is all)."""
    where, score = scores
    if len(where) == len(values) and isinstance(values, dict):
        return values  # the stores build fresh dicts for every `item_stats`
    return dict(zip(index.ids_array[where].tolist(), score[where].tolist()))


def _grouped(
    index: ItemIndex, ranked: Ints, members: tuple[Ints, Ints], n_groups: int, length: int
) -> GroupLists:
    """For each of the ``n_groups`` groups, the positions of its first `length` members in the order of `ranked`
    (`GroupLists`: empty for a group with none)."""
    groups, items = members
    n = len(index)
    rank = np.full(n, n, dtype=np.int64)
    rank[ranked] = np.arange(len(ranked), dtype=np.int64)
    member_rank = rank[items]
    keep = member_rank < n
    # One sort orders every group's members by rank: the key is (group, rank) in one integer.
    keys = np.sort(groups[keep] * (n + 1) + member_rank[keep])
    if not len(keys):
        return GroupLists(*(np.zeros(n_groups, dtype=np.int64),) * 2, np.zeros(0, dtype=np.int64))
    group_of = keys // (n + 1)
    starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
    ends = np.minimum(np.r_[starts[1:], len(keys)], starts + length)
    positions = ranked[keys % (n + 1)]
    by_number = np.zeros((2, n_groups), dtype=np.int64)
    by_number[0, group_of[starts]] = starts
    by_number[1, group_of[starts]] = ends
    return GroupLists(by_number[0], by_number[1], positions)


@njit("f8[:](f8[:])", cache=True, nogil=True)
def log1p_each(values: Floats) -> Floats:  # pragma: no cover - compiled
    """``log1p`` of each value, by the same compiled routine the ranker's features always used (numpy's own
    may differ in the last bit, and the features must not change with where they are computed)."""
    out = np.empty(len(values))
    for i in range(len(values)):
        out[i] = np.log1p(values[i])
    return out
