"""Business rules: what may never be recommended, and backfill so a list is never short."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feature_worker.catalog import Catalog
from feature_worker.decay import DAY_MS
from feature_worker.state import UserState
from server.retrieval.item_index import Ints, ItemIndex, rows_of

_NO_POSITIONS = np.zeros(0, dtype=np.int64)
_NO_MASK = np.zeros(0, dtype=bool)

#: An item bought within this many days is not recommended again ("just bought").
REPURCHASE_BLOCK_DAYS = 30


@dataclass(frozen=True, slots=True)
class Rules:
    """The filter of one request. Every check is O(1) per item."""

    catalog: Catalog
    exclude: frozenset[str]
    category_prefix: str
    just_bought: frozenset[str]

    @classmethod
    def for_request(
        cls,
        catalog: Catalog,
        user: UserState | None,
        exclude: Iterable[str],
        category_prefix: str,
        clock_ms: int,
    ) -> Rules:
        bought: frozenset[str] = frozenset()
        if user is not None and user.purchases:
            since = clock_ms - REPURCHASE_BLOCK_DAYS * DAY_MS
            bought = frozenset(item for item, (ts, _) in user.purchases.items() if ts >= since)
        return cls(catalog, frozenset(exclude), category_prefix.strip("/"), bought)

    def allows(self, item_id: str) -> bool:
        """In the catalog, in stock, not excluded, not just bought, inside the category filter."""
        info = self.catalog.items.get(item_id)
        if info is None or not info.in_stock:
            return False
        if item_id in self.exclude or item_id in self.just_bought:
            return False
        prefix = self.category_prefix
        return not prefix or info.category == prefix or info.category.startswith(prefix + "/")

    def allowed(self, index: ItemIndex, positions: Ints) -> npt.NDArray[np.bool_]:
        """`allows` for every position at once (``positions``: a `CandidateSet`'s, ascending and distinct)."""
        mask: npt.NDArray[np.bool_] = index.in_stock[positions]
        mask[rows_of(positions, self.blocked(index))] = False
        if self.category_prefix:
            mask &= index.in_category(self.category_prefix)[positions]
        return mask

    def blocked(self, index: ItemIndex) -> Ints:
        """Positions in ``index`` of the excluded and just-bought items, ascending (ids outside it left out)."""
        blocked = self.exclude | self.just_bought if self.just_bought else self.exclude
        if not blocked:
            return _NO_POSITIONS
        positions = index.positions(blocked, len(blocked))
        return np.sort(positions[positions >= 0])

    def category_mask(self, index: ItemIndex) -> npt.NDArray[np.bool_]:
        """Over ``index``'s positions: the items inside the category filter (empty: no filter)."""
        return index.in_category(self.category_prefix) if self.category_prefix else _NO_MASK

    def backfill_order(self, popular: Iterable[str]) -> Iterable[str]:
        """Items to fill a short list with: ``popular`` (the shop's, or the category filter's, best first), then
        the rest of the catalog (or of the category) by id.

        The catalog scan runs only while the list is still short, so it costs nothing in the common case.
        """
        yield from popular
        if self.category_prefix:
            scope: Iterable[str] = self.catalog.by_category.get(self.category_prefix, set())
        else:
            scope = self.catalog.items.keys()
        yield from sorted(scope)
