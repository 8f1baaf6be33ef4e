"""Diversity after ranking: at most so many items of one category in the answer."""

from __future__ import annotations

import numpy as np
from numba import njit

from server.retrieval.item_index import Floats, Ints
from server.retrieval.item_rows import ITEM_ID_RANK, ITEM_LEAF
from server.retrieval.kernels import stable_argsort


def best_first(scores: Floats, tiebreak: Ints) -> Ints:
    """Row numbers by score, best first; equal scores by ``tiebreak`` ascending (the item ids' order)."""
    return _best_first(scores.astype(np.float64, copy=False), tiebreak.astype(np.int64, copy=False))


@njit("i8[:](f8[:], i8[:])", cache=True, nogil=True)
def _best_first(scores: Floats, tiebreak: Ints) -> Ints:  # pragma: no cover - compiled
    # One sort by score; the (rare) runs of equal scores are then put in tiebreak order.
    order = stable_argsort(-scores)
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


def top_rows(scores: Floats, allowed: Ints, positions: Ints, items: Floats, k: int, cap: int) -> Ints:
    """Order and diversity in one compiled pass over the ``allowed`` rows (`Rules.allowed_rows`), scored
    ``scores`` (one per allowed row): by score best first with ties by item id (`best_first`), the first ``k``
    with at most ``cap`` per leaf category (`cap_per_group`). Returns indices into ``allowed`` (and
    ``scores``). ``items``: `item_rows` of the index that ``positions`` refer to (the id order and the leaf
    category are read there: the rows the feature pass just read, still in cache)."""
    return _top_rows(scores.astype(np.float64, copy=False), allowed, positions, items, k, cap)


@njit("i8[:](f8[:], i8[:], i8[:], f8[:, ::1], i8, i8)", cache=True, nogil=True)
def _top_rows(
    scores: Floats, allowed: Ints, positions: Ints, items: Floats, k: int, cap: int
) -> Ints:  # pragma: no cover - compiled
    m = len(allowed)
    id_rank = np.empty(m, dtype=np.int64)
    for j in range(m):
        id_rank[j] = int(items[positions[allowed[j]], ITEM_ID_RANK])
    order = _best_first(scores, id_rank)
    if cap <= 0 or m <= cap:
        return order[:k]
    leaf = np.empty(m, dtype=np.int64)
    for j in range(m):
        leaf[j] = int(items[positions[allowed[j]], ITEM_LEAF])
    return _capped(order, leaf, k, cap)
