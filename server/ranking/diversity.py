"""Diversity after ranking: at most so many items of one category in the answer."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, types
from numba.core.typing.templates import Signature

from server.retrieval.item_index import Floats, Ints, ItemIndex


def best_first(scores: Floats, tiebreak: Ints) -> Ints:
    """Row numbers by score, best first; equal scores by ``tiebreak`` ascending (the item ids' order)."""
    return _best_first(scores.astype(np.float64, copy=False), tiebreak.astype(np.int64, copy=False))


@njit("i8[:](f8[:], i8[:])", cache=True, nogil=True)
def _best_first(scores: Floats, tiebreak: Ints) -> Ints:  # pragma: no cover - compiled
    # One sort by score; the (rare) runs of equal scores are then put in tiebreak order.
    order = np.argsort(-scores)
    start = 0
    n = len(order)
    while start < n:
        end = start + 1
        while end < n and scores[order[end]] == scores[order[start]]:
            end += 1
        if end - start > 1:
            run = order[start:end]
            order[start:end] = run[np.argsort(tiebreak[run])]
        start = end
    return order


def cap_per_group(ranked: Ints, groups: Ints, k: int, cap: int) -> Ints:
    """The first ``k`` of ``ranked`` (row numbers, best first) taking at most ``cap`` of any one group.

    ``groups[r]`` is row r's group (-1: none, never capped). Rows passed over for their group come after the
    others, in rank order, only when too few remain to fill ``k``: a short answer is worse than a less
    varied one. ``cap`` <= 0 means no cap.
    """
    if cap <= 0 or len(ranked) <= cap:
        return ranked[:k]
    return _capped(ranked.astype(np.int64, copy=False), groups.astype(np.int64, copy=False), k, cap)


@njit("i8[:](i8[:], i8[:], i8, i8)", cache=True, nogil=True)
def _capped(ranked: Ints, groups: Ints, k: int, cap: int) -> Ints:  # pragma: no cover - compiled
    size = 0
    for row in ranked:
        size = max(size, groups[row] + 1)
    counts = np.zeros(size, dtype=np.int64)
    taken = np.empty(min(k, len(ranked)), dtype=np.int64)
    passed = np.empty(len(ranked), dtype=np.int64)
    n_taken = n_passed = 0
    for row in ranked:
        if n_taken >= k:
            break
        group = groups[row]
        if group >= 0:
            if counts[group] >= cap:
                passed[n_passed] = row
                n_passed += 1
                continue
            counts[group] += 1
        taken[n_taken] = row
        n_taken += 1
    # Too few rows outside full groups: the passed-over ones fill up, in rank order.
    out = np.empty(min(k, n_taken + n_passed), dtype=np.int64)
    out[:n_taken] = taken[:n_taken]
    fill = len(out) - n_taken
    out[n_taken:] = passed[:fill]
    return out


def top_rows(
    scores: Floats,
    positions: Ints,
    index: ItemIndex,
    blocked: Ints,
    category: npt.NDArray[np.bool_],
    k: int,
    cap: int,
) -> Ints:
    """The rules, the order and diversity in one compiled pass: the rows of the allowed candidates (in stock,
    not at a ``blocked`` position, inside ``category`` unless it is empty), by score best first with ties by
    item id (`best_first`), the first ``k`` with at most ``cap`` per leaf category (`cap_per_group`)."""
    return _top_rows(
        scores.astype(np.float64, copy=False),
        positions,
        index.in_stock,
        blocked,
        category,
        index.id_rank,
        index.leaf,
        k,
        cap,
    )


def _top_rows_signature(readonly_category: bool) -> Signature:
    ints, bools = types.int64[:], types.boolean[:]
    category = types.Array(types.boolean, 1, "C", readonly=readonly_category)
    return types.int64[:](types.float64[:], ints, bools, ints, category, ints, ints, types.int64, types.int64)


# The category mask is read-only when it comes from `ItemIndex.in_category` (it is shared), writable when empty.
@njit([_top_rows_signature(True), _top_rows_signature(False)], cache=True, nogil=True)
def _top_rows(
    scores: Floats,
    positions: Ints,
    in_stock: npt.NDArray[np.bool_],
    blocked: Ints,
    category: npt.NDArray[np.bool_],
    id_rank: Ints,
    leaf_at: Ints,
    k: int,
    cap: int,
) -> Ints:  # pragma: no cover - compiled
    n = len(positions)
    allowed = np.empty(n, dtype=np.int64)
    m = 0
    for r in range(n):
        p = positions[r]
        if not in_stock[p] or (len(category) and not category[p]):
            continue
        hit = False
        for b in blocked:
            if b == p:
                hit = True
                break
        if not hit:
            allowed[m] = r
            m += 1
    allowed = allowed[:m]
    order = allowed[_best_first(scores[allowed], id_rank[positions[allowed]])]
    if cap <= 0 or len(order) <= cap:
        return order[:k]
    return _capped(order, leaf_at[positions], k, cap)
