"""Small compiled (numba) routines shared by the serving path's kernels."""

from __future__ import annotations

import numpy as np
from numba import njit

from server.retrieval.item_index import Floats, Ints


@njit(["i8[:](f8[:])", "i8[:](f4[:])"], cache=True, nogil=True)
def stable_argsort(keys: Floats) -> Ints:  # pragma: no cover - compiled
    """``argsort(keys)`` with ties in index order: a stable sort. Numba's own stable sort is several times
    slower than its quicksort on the few hundred keys of a request, and ties are rare, so: quicksort, then
    each run of equal keys put back in index order."""
    order = np.argsort(keys)
    start = 0
    n = len(order)
    while start < n:
        end = start + 1
        while end < n and keys[order[end]] == keys[order[start]]:
            end += 1
        if end - start > 1:
            order[start:end] = np.sort(order[start:end])
        start = end
    return order
