"""Whole-history item neighbours (item-based collaborative filtering, Sarwar et al. 2001): items acted on by the
same customers, however far apart in time.

The real-time co-visitation source pairs only interactions within an hour of each other (the fold's window), and
the item transitions (``trainer.models.transitions``) weigh the user's newest few items most. Neither connects
two items that the same customers pick in sessions days apart, which is what a whole-history neighbour list knows
(on the generated shop, where sessions are days apart, ItemKNN alone beat the serving path: BENCHMARKS.md).
``trainer train --item-knn`` adds it to a bundle; it is off by default (README, "Item neighbours").

With ``X`` the binary user x item matrix of the training events (every event type that acts on items) and ``n_i``
the number of users of item ``i``: ``S_ij = (X'X)_ij / sqrt(n_i n_j)`` off the diagonal (cosine), of which the
`KnnParams.neighbours` largest of each row are kept. It is written in the layout of ``transitions.npz`` (see
`trainer.models.transitions.write_lists`) as the bundle's ``item_knn.npz``, so the server's `ItemTransitions`
scores a user as ``sum_k exp(-k / decay) S[i_k, j]`` over the newest ``window`` items (a slow decay: nearly the
whole history, newer items a little more).

scipy only: a sparse product, no dense n x n matrix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from feature_worker.fold import acted_items
from protos.aisle.v1 import events_pb2
from trainer.data.dataset import INTERACTION_TYPES
from trainer.models.transitions import write_lists


@dataclass(frozen=True, slots=True)
class KnnParams:
    """The defaults (the decay chosen on the validation splits with the source alone: BENCHMARKS.md)."""

    #: Neighbours kept per item.
    neighbours: int = 100
    #: Input items considered at serving time, newest first (the fold's ``recent`` holds 50).
    window: int = 50
    #: Input weight of the k-th newest item: ``exp(-k / decay)``.
    decay: float = 50.0

    def __post_init__(self) -> None:
        if min(self.neighbours, self.window) < 1 or not self.decay > 0:
            raise ValueError("neighbours and window must be at least 1 and decay positive")


@dataclass(slots=True)
class ItemKnnModel:
    """Row ``i`` of ``neighbours``: the items most often acted on by the users of item ``i``, by cosine."""

    item_ids: list[str]
    neighbours: sp.csr_matrix  # float32 [n, n], at most `params.neighbours` entries per row
    params: KnnParams
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write ``item_knn.npz`` (the layout of ``transitions.npz``)."""
        write_lists(path, self.item_ids, self.neighbours, {**asdict(self.params), "info": self.info})


def fit(events: Sequence[events_pb2.Event], params: KnnParams | None = None) -> ItemKnnModel:
    """Fit on ``events`` (what the protocol learns from; their order does not matter)."""
    params = params or KnnParams()
    started = time.perf_counter()
    users: dict[str, int] = {}
    index: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for event in events:
        # An interaction makes an item part of the user's history (as in the ItemKNN baseline of `trainer evaluate`).
        if event.type not in INTERACTION_TYPES:
            continue
        items = acted_items(event)
        if not items:
            continue
        user = users.setdefault(event.user_id, len(users))
        for item in items:
            rows.append(user)
            cols.append(index.setdefault(item, len(index)))
    item_ids = list(index)
    n = len(item_ids)
    x = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(users), n), dtype=np.float32
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    users_of = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    c = (x.T @ x).tocsr()
    c.setdiag(0.0)
    c.eliminate_zeros()
    scale = sp.diags((1.0 / np.sqrt(np.maximum(users_of, 1.0))).astype(np.float32))
    cosine = (scale @ c @ scale).tocsr()
    neighbours = _keep_top(cosine, params.neighbours)
    info = {"items": n, "users": len(users), "fit_seconds": round(time.perf_counter() - started, 1)}
    return ItemKnnModel(item_ids, neighbours, params, info)


def _keep_top(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """The ``keep`` largest entries of each row (ties: the lower column), as a CSR matrix with sorted indices."""
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    out_rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    out_cols: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    out_vals: list[np.ndarray] = [np.zeros(0, dtype=np.float32)]
    for r in range(matrix.shape[0]):
        lo, hi = indptr[r], indptr[r + 1]
        if lo == hi:
            continue
        cols, vals = indices[lo:hi], data[lo:hi]
        if hi - lo > keep:
            best = np.lexsort((cols, -vals))[:keep]
            cols, vals = cols[best], vals[best]
        out_rows.append(np.full(len(cols), r, dtype=np.int64))
        out_cols.append(cols.astype(np.int64))
        out_vals.append(vals.astype(np.float32))
    kept = sp.csr_matrix(
        (np.concatenate(out_vals), (np.concatenate(out_rows), np.concatenate(out_cols))),
        shape=matrix.shape,
        dtype=np.float32,
    )
    kept.sort_indices()
    return kept
