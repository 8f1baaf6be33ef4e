"""Business rules: what may never be recommended, and backfill so a list is never short."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit, types
from numba.core.typing.templates import Signature

from feature_worker.catalog import Catalog
from feature_worker.decay import DAY_MS
from feature_worker.state import UserState
from server.retrieval.item_index import Ints, ItemIndex

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

    def allowed_rows(self, index: ItemIndex, positions: Ints) -> Ints:
        """The rows of ``positions`` (a `CandidateSet`'s) whose items `allows` accepts, ascending: every row
        checked at once against the index's stock, the blocked positions and the category filter."""
        return _allowed_rows(positions, index.in_stock, self.blocked(index), self.category_mask(index))

    def blocked(self, index: ItemIndex) -> Ints:
        """Positions in ``index`` of the excluded and just-bought items (ids outside it left out)."""
        blocked = self.exclude | self.just_bought if self.just_bought else self.exclude
        if not blocked:
            return _NO_POSITIONS
        positions = index.positions(blocked, len(blocked))
        found: Ints = positions[positions >= 0]
        return found

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


def _allowed_rows_signature(readonly_category: bool) -> Signature:
    ints = types.int64[:]
    category = types.Array(types.boolean, 1, "C", readonly=readonly_category)
    return ints(ints, types.boolean[:], ints, category)


# The category mask is read-only when it comes from `ItemIndex.in_category` (it is shared), writable when empty.
@njit([_allowed_rows_signature(True), _allowed_rows_signature(False)], cache=True, nogil=True)
def _allowed_rows(
    positions: Ints, in_stock: npt.NDArray[np.bool_], blocked: Ints, category: npt.NDArray[np.bool_]
) -> Ints:  # pragma: no cover - compiled
    rows = np.empty(len(positions), dtype=np.int64)
    n = 0
    for r in range(len(positions)):
        p = positions[r]
        if not in_stock[p] or (len(category) and not category[p]):
            continue
        hit = False
        for b in blocked:  # a request blocks a few dozen items at most
            if b == p:
                hit = True
                break
        if not hit:
            rows[n] = r
            n += 1
    return rows[:n]
