"""Item-transition candidates: what tends to come next after the user's latest items, from ``transitions.npz``.

The file is written by ``trainer.models.transitions`` (a closed-form SLIST-style model: see its docstring) into a
model bundle (``server.retrieval.bundles.TRANSITIONS``; optional: a bundle without it serves without this source). It
holds, for each item the model knows, its strongest followers and their weights. A user's score for item ``j``
is ``sum_k exp(-k / decay) * B[i_k, j]`` over the user's latest ``window`` known items ``i_0`` (newest),
``i_1``, ...: the same weighting the model was fitted with (the parameters come from the file itself).

Everything on the request path is numpy over arrays built once at load time: the neighbour lists are padded
to one width, so gathering the rows of 50 items is one fancy-index, summing them one ``bincount``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from sys import intern

import numpy as np
import numpy.typing as npt
from numba import njit

from server.retrieval.bundles import BundleError
from server.retrieval.kernels import stable_argsort

#: The layout version of ``transitions.npz`` this module reads.
FORMAT_VERSION = 1
_KEYS = ("format_version", "item_ids", "indptr", "indices", "data", "params")


class ItemTransitions:
    """The neighbour lists of one ``transitions.npz``; read-only once built, so safe to share between threads.

    Items are addressed by their index in `item_ids` (the model's own vocabulary, most frequent first), which is
    what `top` returns; `index_of` maps external ids to it.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        indptr: npt.NDArray[np.integer],
        indices: npt.NDArray[np.integer],
        data: npt.NDArray[np.floating],
        decay: float,
        window: int,
        source: str = "<arrays>",
    ) -> None:
        """Check and pad the CSR arrays (row ``i``: the followers of ``item_ids[i]``); `BundleError` if bad."""
        n = len(item_ids)
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        data = np.asarray(data, dtype=np.float32)
        if indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise BundleError(f"{source}: indptr does not describe {n} rows")
        if indices.shape != data.shape or indptr[-1] != len(indices):
            raise BundleError(
                f"{source}: {len(indices)} indices and {len(data)} weights for {indptr[-1]} entries"
            )
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise BundleError(f"{source}: a neighbour index is outside 0..{n - 1}")
        if not np.isfinite(data).all():
            raise BundleError(f"{source}: weights are not all finite")
        if not (isinstance(window, int) and window >= 1 and decay > 0 and math.isfinite(decay)):
            raise BundleError(f"{source}: needs window >= 1 and a positive decay, got {window}, {decay}")
        # Interned, as the catalog's and the fold's ids are, so `index_of` finds them by identity.
        self.item_ids: list[str] = list(map(intern, item_ids))
        #: External id -> index in `item_ids`.
        self.index_of: dict[str, int] = {item: i for i, item in enumerate(self.item_ids)}
        if len(self.index_of) != n:
            raise BundleError(f"{source}: item ids are not unique")
        self.decay = float(decay)
        self.window = window
        self.size = n
        lengths = np.diff(indptr)
        width = max(1, int(lengths.max()) if n else 1)
        #: Followers of each item, padded with item 0 at weight 0 (adds nothing) to one width.
        self.neighbours = np.zeros((max(n, 1), width), dtype=np.int64)
        self.weights = np.zeros((max(n, 1), width), dtype=np.float32)
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(len(indices)) - np.repeat(indptr[:-1], lengths)
        self.neighbours[rows, cols] = indices
        self.weights[rows, cols] = data
        #: ``exp(-k / decay)`` for the k-th newest input item, as in training.
        self.input_weights = np.exp(-np.arange(window, dtype=np.float64) / self.decay).astype(np.float32)

    @classmethod
    def load(cls, path: Path) -> ItemTransitions:
        """Read a ``transitions.npz`` (never unpickles); `BundleError` when missing, unreadable or inconsistent."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [key for key in _KEYS if key not in npz.files]
                if missing:
                    raise BundleError(f"{path}: not a transitions file, missing {', '.join(missing)}")
                version = int(npz["format_version"])
                if version != FORMAT_VERSION:
                    raise BundleError(f"{path}: format version {version}, this server reads {FORMAT_VERSION}")
                params = json.loads(str(npz["params"]))
                item_ids = [str(item) for item in npz["item_ids"]]
                indptr, indices, data = npz["indptr"], npz["indices"], npz["data"]
        except BundleError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{path}: cannot read the item transitions: {exc}") from exc
        if not isinstance(params, dict):
            raise BundleError(f"{path}: params is not a JSON object")
        decay, window = params.get("decay"), params.get("window")
        if not isinstance(decay, (int, float)) or not isinstance(window, int):
            raise BundleError(f"{path}: params needs a numeric decay and an integer window")
        return cls(item_ids, indptr, indices, data, float(decay), window, source=str(path))

    def inputs(
        self, recent: Sequence[tuple[int, int, str]], context_item_ids: Sequence[str] = ()
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(item indices, weights) of the input items: the newest ``window`` known ones, newest first.

        ``recent`` is ``UserState.recent`` ((ts_ms, EventType, item_id), oldest first); the context items follow
        it, so they are the newest (the last one first). Unknown items are skipped and do not count as a
        position. An item that appears twice is an input twice (its weights add up).
        """
        index_of, window = self.index_of, self.window
        rows: list[int] = []
        for item in reversed(context_item_ids):
            i = index_of.get(item)
            if i is not None:
                rows.append(i)
                if len(rows) == window:
                    break
        if len(rows) < window:
            for k in range(len(recent) - 1, -1, -1):
                i = index_of.get(recent[k][2])
                if i is not None:
                    rows.append(i)
                    if len(rows) == window:
                        break
        return np.asarray(rows, dtype=np.int64), self.input_weights[: len(rows)]

    def scores(
        self, recent: Sequence[tuple[int, int, str]], context_item_ids: Sequence[str] = ()
    ) -> npt.NDArray[np.float32]:
        """Every item's score (float32 ``[size]``; 0 for items no input leads to), the inputs themselves kept."""
        rows, weights = self.inputs(recent, context_item_ids)
        return self._accumulate(rows, weights)

    def _accumulate(
        self, rows: npt.NDArray[np.int64], weights: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        scores = np.zeros(self.size, dtype=np.float32)
        if len(rows):
            # add.at, not bincount: it adds float32 in place, without an n-sized float64 temporary.
            np.add.at(scores, self.neighbours[rows].ravel(), (self.weights[rows] * weights[:, None]).ravel())
        return scores

    def top(
        self, recent: Sequence[tuple[int, int, str]], context_item_ids: Sequence[str] = (), n: int = 100
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` best items (indices into `item_ids`) and their scores, best first; the input items never.

        Only items with a positive score are returned, so fewer than ``n`` (none for a user without a known
        item). Ties go to the lower index (the more frequent item). Scores are on the model's scale: sums of
        ``B`` weights, comparable between the users of one file, not between files; the same sums as `scores`
        (one compiled pass, `_top`, touching only the inputs' followers).
        """
        rows, weights = self.inputs(recent, context_item_ids)
        if not len(rows) or n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return _top(self.neighbours, self.weights, rows, weights, self.size, n)

    def top_ids(
        self, recent: Sequence[tuple[int, int, str]], context_item_ids: Sequence[str] = (), n: int = 100
    ) -> list[tuple[str, float]]:
        """`top` with external item ids: [(item_id, score)], best first."""
        found, values = self.top(recent, context_item_ids, n)
        item_ids = self.item_ids
        return [(item_ids[i], s) for i, s in zip(found.tolist(), values.tolist(), strict=True)]


def load_optional(path: Path) -> ItemTransitions | None:
    """The neighbour lists at ``path`` (a bundle's ``transitions.npz`` or ``item_knn.npz``), or None when the
    bundle has no such file (both are optional)."""
    if not path.is_file():
        return None
    return ItemTransitions.load(path)


@njit(
    "Tuple((i8[:], f4[:]))(i8[:, :], f4[:, :], i8[:], f4[:], i8, i8)",
    cache=True,
    nogil=True,
)
def _top(
    neighbours: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    input_weights: npt.NDArray[np.float32],
    size: int,
    n: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:  # pragma: no cover - compiled
    """(items, scores) of `ItemTransitions.top`: float32 sums in the order `_accumulate` adds them, the input
    rows zeroed, the best ``n`` positive ones by score, ties by index."""
    scores = np.zeros(size, dtype=np.float32)
    touched = np.empty(len(rows) * neighbours.shape[1], dtype=np.int64)
    count = 0
    for k in range(len(rows)):
        row = rows[k]
        w = input_weights[k]
        for c in range(neighbours.shape[1]):
            item = neighbours[row, c]
            if scores[item] == 0.0:
                touched[count] = item
                count += 1
            scores[item] += weights[row, c] * w
    for row in rows:
        scores[row] = 0.0  # the user's own latest items: the rules drop them anyway
    # The distinct positive items, then the n best: a partition finds the n-th best value, so only the items
    # above it (and the ties at it, lowest index first) are sorted.
    found = np.empty(count, dtype=np.int64)
    kept = 0
    for j in range(count):
        item = touched[j]
        if scores[item] > 0.0:
            found[kept] = item
            kept += 1
            scores[item] = -scores[item]  # marks it taken; the sign is restored below
    found = found[:kept]
    values = np.empty(kept, dtype=np.float32)
    for j in range(kept):
        values[j] = scores[found[j]]  # negative: ascending sorts put the best first
    if kept > n:
        kth = np.partition(values, n - 1)[n - 1]
        above = values < kth
        take = np.flatnonzero(above)
        tied = np.sort(found[values == kth])[: n - len(take)]
        found = np.concatenate((found[take], tied))
        values = np.concatenate((values[take], np.full(len(tied), kth, dtype=np.float32)))
    by_index = np.argsort(found)
    found, values = found[by_index], values[by_index]
    order = stable_argsort(values)
    return found[order], -values[order]
