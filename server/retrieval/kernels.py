"""Small compiled (numba) routines shared by the serving path's kernels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from server.retrieval.item_index import Ints


@njit(["i8[:](f8[:])", "i8[:](f4[:])"], cache=True, nogil=True)
def stable_argsort(
    keys: npt.NDArray[np.float64] | npt.NDArray[np.float32],
) -> Ints:  # pragma: no cover - compiled
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


@njit("b1[:](i8[:], i8[:])", cache=True, nogil=True)
def is_in(values: Ints, members: Ints) -> npt.NDArray[np.bool_]:  # pragma: no cover - compiled
    """``np.isin(values, members)`` for the short lists of a request (a few hundred values, a few dozen
    members), where a plain double loop beats isin's sorting by an order of magnitude."""
    out = np.zeros(len(values), dtype=np.bool_)
    for i in range(len(values)):
        v = values[i]
        for m in members:
            if m == v:
                out[i] = True
                break
    return out
