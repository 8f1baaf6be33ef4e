"""The catalog as arrays: dense item positions and the attributes the serving path reads per candidate.

Requests never touch item ids or `ItemInfo` objects between reading the features and writing the answer:
every candidate is a position in an `ItemIndex`, and its brand, category, price and stock are array lookups.
An index is built once per catalog version (`ItemIndex.of`, cached), off the request path by the top-list
rebuild (`TopLists.build`), and requests read the one their top lists were built with, so positions,
attributes and lists always agree. Items added since then are unknown to the request (as they are to the
lists) until the next rebuild, a second at most.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from itertools import repeat
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from feature_worker.catalog import Catalog

#: Category masks remembered per index (`ItemIndex.in_category`); past this many the memory starts over.
MAX_CATEGORY_MASKS = 1024
#: Co-visitation lists remembered per index (`ItemIndex.neighbours`); past this many the memory starts over.
MAX_NEIGHBOUR_LISTS = 200_000

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


class ItemIndex:
    """Positions ``0..n-1`` of one catalog version's items, with per-position attributes.

    - ``ids[p]``: the item id; ``position[item_id]``: its position.
    - ``brand[p]``: the brand's number in ``brand_names`` (-1: none).
    - ``leaf[p]`` / ``top[p]``: the numbers in ``category_names`` of the item's full category path and of its
      first level (-1: none). Every prefix of every path has a number (``category_id``).
    - ``price[p]`` (0 when unknown) and ``in_stock[p]``.
    """

    _cache: ClassVar[weakref.WeakKeyDictionary[Catalog, ItemIndex]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, catalog: Catalog) -> None:
        self.version = catalog.version
        items = dict(catalog.items)  # a snapshot: the catalog may change while this runs
        self.ids: list[str] = list(items)
        n = len(self.ids)
        self.position: dict[str, int] = {item: i for i, item in enumerate(self.ids)}
        self.ids_array = np.array(self.ids, dtype=object)
        # Rank of each item's id among all ids: the tie-break of every ranked list.
        self.id_rank = np.empty(n, dtype=np.int64)
        self.id_rank[np.array(sorted(range(n), key=self.ids.__getitem__), dtype=np.int64)] = np.arange(
            n, dtype=np.int64
        )
        self.category_id: dict[str, int] = {}
        self.brand_id: dict[str, int] = {}
        self.brand = np.full(n, -1, dtype=np.int64)
        self.leaf = np.full(n, -1, dtype=np.int64)
        self.top = np.full(n, -1, dtype=np.int64)
        self.price = np.zeros(n, dtype=np.float64)
        self.in_stock = np.zeros(n, dtype=bool)
        #: (category number, position) for every prefix of every item's path; (brand number, position).
        category_pairs: list[tuple[int, int]] = []
        brand_pairs: list[tuple[int, int]] = []
        categories, brands = self.category_id, self.brand_id
        for i, info in enumerate(items.values()):
            for prefix in info.categories:
                c = categories.setdefault(prefix, len(categories))
                category_pairs.append((c, i))
            if info.categories:
                self.leaf[i] = categories[info.categories[-1]]
                self.top[i] = categories[info.categories[0]]
            if info.brand:
                b = brands.setdefault(info.brand, len(brands))
                self.brand[i] = b
                brand_pairs.append((b, i))
            self.price[i] = info.price if info.price > 0 else 0.0
            self.in_stock[i] = info.in_stock
        self.category_names: list[str] = list(categories)
        self.brand_names: list[str] = list(brands)
        self.category_members = _pairs(category_pairs)
        self.brand_members = _pairs(brand_pairs)
        self._category_masks: dict[str, npt.NDArray[np.bool_]] = {}
        #: item -> (its co-visitation list as read, the list's positions, counts and their sum), for
        #: `neighbours`; written on the event loop only.
        self._neighbours: dict[str, tuple[object, Ints, Floats, float]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, catalog: Catalog) -> ItemIndex:
        """The index of the catalog's current version (built once per version, in any thread)."""
        with cls._lock:
            index = cls._cache.get(catalog)
        if index is None or index.version != catalog.version:
            index = cls(catalog)
            with cls._lock:
                cls._cache[catalog] = index
        return index

    def positions(self, item_ids: Iterable[str], count: int = -1) -> Ints:
        """Positions of ``item_ids`` (-1 for ids not in this index), in order."""
        get = self.position.get
        return np.fromiter(map(get, item_ids, repeat(-1)), dtype=np.int64, count=count)

    def neighbours(self, item_id: str, ranked: list[tuple[str, float]]) -> tuple[Ints, Floats, float]:
        """(positions, counts, their sum) of ``ranked``, the co-visitation list read for ``item_id``.

        Remembered per item for as long as the store hands out the same list object: the memory store keeps
        each item's sorted list until its neighbours change, so a seed's list is converted once per change,
        not once per request (lists decoded from Redis are new objects, so they are converted every time).
        """
        found = self._neighbours.get(item_id)
        if found is not None and found[0] is ranked:
            return found[1], found[2], found[3]
        if not ranked:
            return np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
        names, counts = zip(*ranked)  # one pass over the pairs, not one per column
        positions = self.positions(names, len(names))
        total = sum(counts)  # Python's left-to-right sum, as the scores were always computed
        converted = (ranked, positions, np.array(counts, dtype=np.float64), total)
        if len(self._neighbours) >= MAX_NEIGHBOUR_LISTS:
            self._neighbours.clear()
        self._neighbours[item_id] = converted
        return positions, converted[2], total

    def names(self, positions: Ints) -> list[str]:
        ids: list[str] = self.ids_array[positions].tolist()
        return ids

    def in_category(self, prefix: str) -> npt.NDArray[np.bool_]:
        """A mask over positions: items whose category path starts with the category ``prefix`` (read-only;
        remembered per prefix, since category pages ask for the same few again and again)."""
        mask = self._category_masks.get(prefix)
        if mask is None:
            mask = np.zeros(len(self.ids), dtype=bool)
            c = self.category_id.get(prefix)
            if c is not None:
                groups, members = self.category_members
                lo, hi = np.searchsorted(groups, [c, c + 1])
                mask[members[lo:hi]] = True
            mask.flags.writeable = False
            if len(self._category_masks) >= MAX_CATEGORY_MASKS:
                self._category_masks.clear()
            self._category_masks[prefix] = mask
        return mask


def _pairs(pairs: list[tuple[int, int]]) -> tuple[Ints, Ints]:
    """(group numbers, positions) of memberships, sorted by group number."""
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    array = np.array(pairs, dtype=np.int64)
    order = np.argsort(array[:, 0], kind="stable")
    return array[order, 0], array[order, 1]
