"""Ranked item lists derived from the shop-wide counters: popular (overall, per category and per brand) and
trending (overall and per category).

The server rebuilds them once a second off the request path (`TopLists.build` from a background task)
and requests read the last build. A build must stay cheap even so: it runs in a thread, but holds the
GIL while it runs Python code, and every request waits for the GIL meanwhile (the tail of the freshness
figure). So the ranking is done by numpy over arrays indexed by catalog position: one sort for each of
the two scores, one for all the category and brand lists at once, and Python only to read the scores in
and the lists out. What depends only on the catalog (positions, id order, who belongs to which category
and brand) is computed once per catalog version (`_CatalogIndex`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from feature_worker.catalog import Catalog
from feature_worker.stores.base import ItemStats

#: Items kept per list: enough for candidates and backfill, small enough to rebuild often.
LIST_LENGTH = 200

_Ints = npt.NDArray[np.int64]


@dataclass(slots=True)
class TopLists:
    """Item ids best first, with the score each list was sorted by (in stock or not: rules decide)."""

    popular: list[str] = field(default_factory=list)
    popular_by_category: dict[str, list[str]] = field(default_factory=dict)
    popular_by_brand: dict[str, list[str]] = field(default_factory=dict)
    trending_by_category: dict[str, list[str]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    trending: dict[str, float] = field(default_factory=dict)
    max_popularity: float = 0.0
    clock_ms: int = 0

    @classmethod
    def build(cls, stats: ItemStats, catalog: Catalog, length: int = LIST_LENGTH) -> TopLists:
        """Rank the catalog's items by popularity and trend; items outside the catalog are ignored.

        Every list is ordered by score, highest first, ties by item id; a category's or brand's list
        holds its first `length` items of that order, and only items that have the score (popularity,
        or a trend above 0).
        """
        index = _CatalogIndex.of(catalog)
        popularity = index.scores(stats.popularity, positive=False)
        trending = index.scores(stats.trending, positive=True)
        by_pop = index.ranked(popularity)
        by_trend = index.ranked(trending)
        popular = index.names(by_pop[:length])
        return cls(
            popular=popular,
            popular_by_category=index.grouped(by_pop, index.categories, length),
            popular_by_brand=index.grouped(by_pop, index.brands, length),
            trending_by_category=index.grouped(by_trend, index.categories, length),
            popularity=index.as_dict(popularity, stats.popularity),
            trending=index.as_dict(trending, stats.trending),
            max_popularity=float(popularity[1][by_pop[0]]) if len(by_pop) else 0.0,
            clock_ms=stats.clock_ms,
        )


@dataclass(slots=True)
class _Groups:
    """Membership of items in named groups (categories or brands), as parallel arrays of pairs."""

    names: list[str]
    #: (group number, item position) of every membership, sorted by group number.
    group: _Ints
    item: _Ints


#: Scores of some items: (positions, the score at each position of the catalog, NaN where none).
_Scores = tuple[_Ints, npt.NDArray[np.float64]]


class _CatalogIndex:
    """What a build needs from the catalog, as arrays; rebuilt when the catalog's version changes."""

    _cache: ClassVar[weakref.WeakKeyDictionary[Catalog, _CatalogIndex]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, catalog: Catalog) -> None:
        self.version = catalog.version
        items = dict(catalog.items)  # a snapshot: the catalog may change while this runs
        self.ids = list(items)
        self.position = {item: i for i, item in enumerate(self.ids)}
        self.ids_array = np.array(self.ids, dtype=object)
        # Rank of each item's id among all ids: the tie-break of every list.
        self.id_rank = np.empty(len(self.ids), dtype=np.int64)
        self.id_rank[np.array(sorted(range(len(self.ids)), key=self.ids.__getitem__), dtype=np.int64)] = np.arange(
            len(self.ids), dtype=np.int64
        )
        category_pairs: dict[str, list[int]] = {}
        brand_pairs: dict[str, list[int]] = {}
        for i, info in enumerate(items.values()):
            for prefix in info.categories:
                category_pairs.setdefault(prefix, []).append(i)
            if info.brand:
                brand_pairs.setdefault(info.brand, []).append(i)
        self.categories = _groups(category_pairs)
        self.brands = _groups(brand_pairs)

    @classmethod
    def of(cls, catalog: Catalog) -> _CatalogIndex:
        with cls._lock:
            index = cls._cache.get(catalog)
        if index is None or index.version != catalog.version:
            index = cls(catalog)
            with cls._lock:
                cls._cache[catalog] = index
        return index

    def scores(self, values: Mapping[str, float], positive: bool) -> _Scores:
        """Scores of the catalog's items found in `values` (above 0 only, when `positive`)."""
        n = len(values)
        found = np.fromiter(map(self.position.get, values, repeat(-1, n)), dtype=np.int64, count=n)
        weights = np.fromiter(values.values(), dtype=np.float64, count=n)
        keep = found >= 0
        if positive:
            keep &= weights > 0
        where = found[keep]
        score = np.full(len(self.ids), np.nan)
        score[where] = weights[keep]
        return where, score

    def ranked(self, scores: _Scores) -> _Ints:
        """Positions of the scored items, best first, ties by id."""
        where, score = scores
        return where[np.lexsort((self.id_rank[where], -score[where]))]

    def names(self, positions: _Ints) -> list[str]:
        ids: list[str] = self.ids_array[positions].tolist()
        return ids

    def as_dict(self, scores: _Scores, values: Mapping[str, float]) -> dict[str, float]:
        """`values` restricted to the scored items, in the same order (`values` itself when that is all)."""
        where, score = scores
        if len(where) == len(values) and isinstance(values, dict):
            return values  # the stores build fresh dicts for every `item_stats`
        return dict(zip(self.ids_array[where].tolist(), score[where].tolist()))

    def grouped(self, ranked: _Ints, groups: _Groups, length: int) -> dict[str, list[str]]:
        """For each group, its first `length` members in the order of `ranked` (groups without any left out)."""
        n = len(self.ids)
        rank = np.full(n, n, dtype=np.int64)
        rank[ranked] = np.arange(len(ranked), dtype=np.int64)
        member_rank = rank[groups.item]
        keep = member_rank < n
        # One sort orders every group's members by rank: the key is (group, rank) in one integer.
        keys = np.sort(groups.group[keep] * (n + 1) + member_rank[keep])
        if not len(keys):
            return {}
        group_of = keys // (n + 1)
        starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        names = self.ids_array[ranked[keys % (n + 1)]]
        out: dict[str, list[str]] = {}
        group_names = groups.names
        for g, start, end in zip(group_of[starts].tolist(), starts.tolist(), ends.tolist()):
            out[group_names[g]] = names[start : min(end, start + length)].tolist()
        return out


def _groups(pairs: dict[str, list[int]]) -> _Groups:
    names = list(pairs)
    sizes = [len(members) for members in pairs.values()]
    group = np.repeat(np.arange(len(names), dtype=np.int64), sizes)
    item = np.fromiter((i for members in pairs.values() for i in members), dtype=np.int64, count=sum(sizes))
    return _Groups(names, group, item)
