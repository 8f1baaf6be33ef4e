"""Reference models every evaluation runs beside the serving path: popularity, co-visitation, ItemKNN, EASE.

All of them see the same thing: the binary user x item matrix ``X`` of the events learned so far (a user acted
on an item, whatever the event type) and, at ranking time, the case's history as a binary row ``x``.

* ``popularity``: items by the number of users who acted on them.
* ``covisitation``: ``x @ C`` with ``C = X^T X`` off the diagonal: how many users acted on both items, summed
  over the history (whole histories, no time window: the classic "customers who bought this also bought").
* ``itemknn``: ``x @ S`` with ``S`` the cosine of ``X``'s columns (``C`` divided by ``sqrt(n_i n_j)``).
* ``ease``: Steck's EASE (WWW 2019), ``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1``; dense, so its
  memory and time grow with the square and the cube of the catalog (about 1 GiB and a minute for 12k items).

Ties (many items score 0 for a short history) are broken by popularity, then by catalog order, so every model
backfills the way the serving path does. Nothing is random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from feature_worker.fold import acted_items
from protos.aisle.v1 import events_pb2
from trainer.data.dataset import INTERACTION_TYPES
from trainer.evaluation.base import EvalModel
from trainer.evaluation.protocols import Case

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.integer[Any]]

#: Cases scored per matrix product: bounds the dense score block (cases x items doubles).
BATCH = 256
#: Chosen on the validation split of Amazon Beauty (50 beat 10, 25, 150, 500 and 1,500).
EASE_LAMBDA = 50.0


class _MatrixModel(EvalModel):
    """Keeps the (user, item) pairs learned; ``refresh`` rebuilds ``X`` and the model's item scores."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.users: dict[str, int] = {}
        self.pairs: set[tuple[int, int]] = set()
        self.popularity: FloatArray = np.zeros(len(self.item_ids))
        #: Item positions best first: popularity, then catalog order. Ties of every model are broken by it.
        self.priority: IntArray = np.arange(len(self.item_ids))
        self._order: IntArray = np.arange(len(self.item_ids))

    def update(self, events: Sequence[events_pb2.Event]) -> None:
        users, index, pairs = self.users, self.index, self.pairs
        for event in events:
            if event.type not in INTERACTION_TYPES:
                continue
            user = users.setdefault(event.user_id, len(users))
            for item in acted_items(event):
                i = index.get(item)
                if i is not None:
                    pairs.add((user, i))

    def refresh(self) -> None:
        x = self._matrix()
        self.popularity = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        self._order = np.lexsort((np.arange(len(self.item_ids)), -self.popularity))
        self.priority = np.empty_like(self._order)
        self.priority[self._order] = np.arange(len(self._order))
        self._fit(x)

    def _matrix(self) -> sp.csr_matrix:
        if not self.pairs:
            return sp.csr_matrix((0, len(self.item_ids)))
        rows, cols = np.array(sorted(self.pairs), dtype=np.int64).T
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(self.users), len(self.item_ids)))

    def _fit(self, x: sp.csr_matrix) -> None:
        """Build the model from ``X``; the default has nothing beyond popularity."""

    def _scores(self, histories: sp.csr_matrix) -> FloatArray | sp.csr_matrix:
        """Scores, one row per history: dense, or sparse when every score not stored is 0 and all are >= 0.

        The default scores every item 0, which ranks by the tie-break alone: popularity.
        """
        return sp.csr_matrix(histories.shape)

    def rank(self, cases: Sequence[Case], k: int) -> list[list[str]]:
        out: list[list[str]] = []
        for lo in range(0, len(cases), BATCH):
            batch = cases[lo : lo + BATCH]
            rows: list[int] = []
            cols: list[int] = []
            for r, case in enumerate(batch):
                for item in case.history:
                    i = self.index.get(item)
                    if i is not None:
                        rows.append(r)
                        cols.append(i)
            histories = sp.csr_matrix(
                (np.ones(len(rows)), (rows, cols)), shape=(len(batch), len(self.item_ids))
            )
            scores = self._scores(histories)
            if sp.issparse(scores):
                scores = sp.csr_matrix(scores)
                for r in range(len(batch)):
                    seen = histories.indices[histories.indptr[r] : histories.indptr[r + 1]]
                    lo_r, hi_r = scores.indptr[r], scores.indptr[r + 1]
                    top = self._top_sparse(scores.indices[lo_r:hi_r], scores.data[lo_r:hi_r], seen, k)
                    out.append([self.item_ids[i] for i in top])
            else:
                scores[rows, cols] = -np.inf
                out.extend([self.item_ids[i] for i in self._top(row, k)] for row in scores)
        return out

    def _top(self, scores: FloatArray, k: int) -> list[int]:
        """The ``k`` best positions of a dense row, ties by ``priority``; excluded (-inf) items never."""
        k = min(k, len(scores))
        if k <= 0:
            return []
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = np.flatnonzero(scores > threshold)
        above = above[np.lexsort((self.priority[above], -scores[above]))]
        best: list[int] = above.tolist()
        if threshold == -np.inf:
            return best
        tied: list[int] = self._order[scores[self._order] == threshold][: k - len(above)].tolist()
        return best + tied

    def _top_sparse(self, cols: IntArray, values: FloatArray, seen: IntArray, k: int) -> list[int]:
        """The ``k`` best of a sparse row (unstored scores are 0), ties by ``priority``, ``seen`` excluded."""
        keep = values > 0.0
        if len(seen):
            keep &= ~np.isin(cols, seen)
        cols, values = cols[keep], values[keep]
        top: list[int] = cols[np.lexsort((self.priority[cols], -values))][:k].tolist()
        if len(top) < k:
            # Every other item scores 0: popularity order, then catalog order.
            taken = set(top)
            taken.update(seen.tolist())
            for i in self._order.tolist():
                if i not in taken:
                    top.append(i)
                    if len(top) >= k:
                        break
        return top


class Popularity(_MatrixModel):
    name = "popularity"


class CoVisitation(_MatrixModel):
    name = "covisitation"

    def _fit(self, x: sp.csr_matrix) -> None:
        c = (x.T @ x).tocsr()
        c.setdiag(0.0)
        c.eliminate_zeros()
        self.similarity = c

    def _scores(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        scores: sp.csr_matrix = (histories @ self.similarity).tocsr()
        return scores


class ItemKNN(CoVisitation):
    name = "itemknn"

    def _fit(self, x: sp.csr_matrix) -> None:
        super()._fit(x)
        norms = np.sqrt(np.maximum(self.popularity, 1.0))
        scale = sp.diags(1.0 / norms)
        self.similarity = (scale @ self.similarity @ scale).tocsr()


class EASE(_MatrixModel):
    name = "ease"

    def __init__(self, item_ids: Sequence[str], regularization: float = EASE_LAMBDA) -> None:
        super().__init__(item_ids)
        self.regularization = regularization

    def _fit(self, x: sp.csr_matrix) -> None:
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.regularization
        p = np.linalg.inv(gram)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b

    def _scores(self, histories: sp.csr_matrix) -> FloatArray:
        return np.asarray(histories @ self.weights)


BASELINES: dict[str, type[_MatrixModel]] = {
    "popularity": Popularity,
    "covisitation": CoVisitation,
    "itemknn": ItemKNN,
    "ease": EASE,
}
