"""A closed-form linear item-transition model of the SLIST family (Choi et al., "Session-aware Linear Item-Item
Models for Session-based Recommendation", WWW 2021), fitted on each user's item sequence.

What it learns is one item x item matrix ``B``: a user whose recent items are ``i_0`` (newest), ``i_1``, ... scores
item ``j`` as ``sum_k w_k * B[i_k, j]`` with ``w_k = exp(-k / decay)`` over the latest ``window`` items the model
knows. ``B`` is the ridge regression, in closed form, of two stacked objectives:

- **SLIS** (weight ``alpha``): each user's set of items reconstructs itself (EASE, Steck 2019): items bought by
  the same people;
- **SLIT** (weight ``1 - alpha``): at every position ``t`` of a user's sequence whose item is new to the user,
  the recency-weighted items before ``t`` (the input the server will build, ``w_k`` above) predict the items from
  ``t`` on: the next one with weight 1, the following ``targets - 1`` with ``exp(-j / target_decay)``.

With ``X`` the user x item matrix, ``S``/``T`` the SLIT inputs and targets, ``G = alpha X'X + (1-alpha) S'S`` and
``P = (G + reg I)^-1``: ``B = P (alpha X'X + (1-alpha) S'T) - P diag(gamma)``, ``gamma`` chosen so that
``diag(B) = 0`` (an item never explains itself; the user's own items are excluded from every answer anyway).
Rewritten to need only ``P`` and a sparse ``M = S'(T - S)``: ``B = I + (1-alpha) P M - P diag(c)`` with
``c_j = (1 + (1-alpha) (PM)_jj) / P_jj``.

**Memory and time.** ``P`` is dense: ``n^2`` float32 (``n`` items), inverted by Cholesky (about ``n^3`` flops),
plus ``P M`` and the per-row selection in blocks. The vocabulary is therefore capped to the `MAX_ITEMS` most
frequent items of the training events, so that memory and time do not grow with the shop: one dense matrix
(the Gram matrix, inverted in place; 1.6 GB at 20,000 items) plus blocks of 1,024 rows. Measured on the
loaded 2-core box: Beauty (12,068 items) 49 s and 1.3 GB peak; 20,000 items (the cap) 196 s and 2.8 GB.
Rarer items are neither inputs nor answers; Amazon Beauty (12,101 items) fits whole. Only the top
`NEIGHBOURS` positive entries of each row of ``B`` are kept, as a CSR matrix: the artifact ``transitions.npz``
(see `TransitionModel.save`), which ``server.retrieval.transitions`` serves.

The defaults of `TransitionParams` were chosen once on the validation split of Amazon Beauty (``loo``) and are
the same for every shop (BENCHMARKS.md). Every event that acts on items enters the sequence, whatever its type,
in the data set's order, as the fold's ``UserState.recent`` keeps them; an item outside the vocabulary is
dropped from the sequence (as the server drops it), so positions count known items only.

numpy and scipy only: no torch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

from feature_worker.fold import acted_items
from protos.aisle.v1 import events_pb2
from trainer.data.dataset import Dataset
from trainer.models.sequences import stream_lists

#: At most this many items (the most frequent in the training events) enter the model; see the module docstring.
MAX_ITEMS = 20_000
#: Neighbours kept per item (the strongest positive entries of its row of ``B``).
NEIGHBOURS = 150
#: Rows of ``B`` built at once while selecting neighbours (bounds the temporary dense blocks).
_BLOCK = 1_024
#: Version of the ``transitions.npz`` layout; the server refuses another.
FORMAT_VERSION = 1

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TransitionParams:
    """Hyperparameters; the defaults are the one configuration for every shop (see the module docstring)."""

    #: Ridge penalty of the closed form.
    reg: float = 100.0
    #: Share of the SLIS objective (item sets), the rest is SLIT (transitions).
    alpha: float = 0.2
    #: Input weight of the k-th newest item: ``exp(-k / decay)`` (k = 0: the newest).
    decay: float = 2.0
    #: Input items considered, newest first (the fold's ``recent`` holds 50; with decay 2 the 21st weighs e^-10).
    window: int = 20
    #: Items from the predicted position on that are SLIT targets (1: the next item only).
    targets: int = 3
    #: Weight of the j-th target after the next one: ``exp(-j / target_decay)``.
    target_decay: float = 1.0
    max_items: int = MAX_ITEMS
    neighbours: int = NEIGHBOURS

    def __post_init__(self) -> None:
        if not self.reg > 0:
            raise ValueError(f"reg must be positive, got {self.reg}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        if not (self.decay > 0 and self.target_decay > 0):
            raise ValueError("decay and target_decay must be positive")
        if min(self.window, self.targets, self.max_items, self.neighbours) < 1:
            raise ValueError("window, targets, max_items and neighbours must be at least 1")


@dataclass(slots=True)
class Streams:
    """Every user's item sequence over the vocabulary, concatenated, oldest first within each user."""

    items: IntArray  # item index per position
    learn: npt.NDArray[np.bool_]  # the position is an interaction with an item new to its user
    starts: IntArray  # first position of each user; users[u] spans starts[u]:starts[u + 1]
    users: list[str] = field(default_factory=list)


def item_counts(events: Iterable[events_pb2.Event]) -> dict[str, int]:
    """How many times each item is acted on (every event type that acts on items)."""
    counts: dict[str, int] = {}
    for event in events:
        for item in acted_items(event):
            counts[item] = counts.get(item, 0) + 1
    return counts


def vocabulary(events: Sequence[events_pb2.Event], max_items: int = MAX_ITEMS) -> list[str]:
    """The ``max_items`` most frequent items of ``events``, most frequent first (ties: by id)."""
    counts = item_counts(events)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [item for item, _ in ranked[:max_items]]


def build_streams(events: Iterable[events_pb2.Event], index: dict[str, int]) -> Streams:
    """Each user's sequence (see the module docstring), in the order of ``events``."""
    lists = stream_lists(events, index)
    users = [u for u, (items, _, _) in lists.items() if items]
    lengths = np.array([len(lists[u][0]) for u in users], dtype=np.int64)
    starts = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    flat_items = np.fromiter((i for u in users for i in lists[u][0]), dtype=np.int64, count=int(starts[-1]))
    flat_learn = np.fromiter((b for u in users for b in lists[u][2]), dtype=bool, count=int(starts[-1]))
    return Streams(flat_items, flat_learn, starts, users)


def input_weights(count: int, decay: float) -> FloatArray:
    """Weights of ``count`` input items, newest first: ``exp(-k / decay)``. The server applies the same."""
    return np.exp(-np.arange(count, dtype=np.float64) / decay).astype(np.float32)


def design(
    streams: Streams, n: int, params: TransitionParams
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """``X`` (users x items, binary), ``S`` and ``T`` (SLIT rows: weighted inputs and targets)."""
    positions = len(streams.items)
    user_of = np.repeat(np.arange(len(streams.users)), np.diff(streams.starts))
    start_of = streams.starts[user_of]
    end_of = streams.starts[user_of + 1]
    x = sp.csr_matrix(
        (np.ones(positions, dtype=np.float32), (user_of, streams.items)), shape=(len(streams.users), n)
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    # SLIT rows: positions with a new item and at least one item before them.
    rows = np.flatnonzero(streams.learn & (np.arange(positions) > start_of))
    weights = input_weights(params.window, params.decay)
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
    s_rows, s_cols, s_vals = [empty_i], [empty_i], [empty_f]
    for k in range(params.window):
        src = rows - 1 - k
        ok = src >= start_of[rows]
        if not ok.any():
            break
        s_rows.append(np.flatnonzero(ok))
        s_cols.append(streams.items[src[ok]])
        s_vals.append(np.full(int(ok.sum()), weights[k], dtype=np.float32))
    t_rows, t_cols, t_vals = [empty_i], [empty_i], [empty_f]
    for j in range(params.targets):
        dst = rows + j
        ok = dst < end_of[rows]
        ok[ok] &= streams.learn[dst[ok]]
        t_rows.append(np.flatnonzero(ok))
        t_cols.append(streams.items[dst[ok]])
        t_vals.append(np.full(int(ok.sum()), np.exp(-j / params.target_decay), dtype=np.float32))
    shape = (len(rows), n)
    s = sp.csr_matrix((np.concatenate(s_vals), (np.concatenate(s_rows), np.concatenate(s_cols))), shape=shape)
    t = sp.csr_matrix((np.concatenate(t_vals), (np.concatenate(t_rows), np.concatenate(t_cols))), shape=shape)
    s.sum_duplicates()
    t.sum_duplicates()
    return x, s, t


def _inverse_spd(g: FloatArray) -> FloatArray:
    """The inverse of a symmetric positive definite matrix, in place of ``g`` (Cholesky; float32)."""
    factor, info = lapack.spotrf(g, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (info {info})")
    inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"inversion failed (info {info})")
    # Only the lower triangle is written: mirror it, one block of rows at a time (no n x n temporaries).
    n = inverse.shape[0]
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        inverse[lo:hi, hi:] = inverse[hi:, lo:hi].T
        block = inverse[lo:hi, lo:hi]
        block[np.triu_indices(hi - lo, 1)] = block.T[np.triu_indices(hi - lo, 1)]
    result: FloatArray = inverse
    return result


@dataclass(slots=True)
class TransitionModel:
    """The fitted neighbours: row ``i`` of ``neighbours`` holds the items that follow item ``i`` and their weights."""

    item_ids: list[str]
    neighbours: sp.csr_matrix  # float32 [n, n], at most `params.neighbours` entries per row
    params: TransitionParams
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def inputs(self, sequences: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """The weighted input rows of ``sequences`` (each oldest first; unknown items dropped)."""
        index = self.index
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        weights = input_weights(self.params.window, self.params.decay).tolist()
        for r, sequence in enumerate(sequences):
            known = [index[i] for i in sequence if i in index][-self.params.window :]
            for k, col in enumerate(reversed(known)):
                rows.append(r)
                cols.append(col)
                vals.append(weights[k])
        out = sp.csr_matrix(
            (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(sequences), len(self.item_ids))
        )
        out.sum_duplicates()
        return out

    def scores(self, sequences: Sequence[Sequence[str]]) -> FloatArray:
        """Dense scores (float32 ``[len(sequences), n]``) of every item for each sequence."""
        result = (self.inputs(sequences) @ self.neighbours).toarray()
        return np.asarray(result, dtype=np.float32)

    def save(self, path: Path) -> None:
        """Write ``transitions.npz`` (`write_lists`)."""
        write_lists(path, self.item_ids, self.neighbours, {**asdict(self.params), "info": self.info})

    @classmethod
    def load(cls, path: Path) -> TransitionModel:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["params"]))
            info = meta.pop("info", {})
            ids = [str(i) for i in npz["item_ids"]]
            csr = sp.csr_matrix((npz["data"], npz["indices"], npz["indptr"]), shape=(len(ids), len(ids)))
        return cls(ids, csr, TransitionParams(**meta), info)


def write_lists(path: Path, item_ids: Sequence[str], csr: sp.csr_matrix, params: dict[str, Any]) -> None:
    """Write neighbour lists (no pickle): the CSR arrays, the item ids and ``params`` as JSON, which must hold the
    serving weights ``decay`` and ``window`` (``server.retrieval.transitions.ItemTransitions`` reads the file)."""
    np.savez(
        path,
        format_version=np.array(FORMAT_VERSION, dtype=np.int64),
        item_ids=np.array(item_ids, dtype=np.str_),
        indptr=csr.indptr.astype(np.int64),
        indices=csr.indices.astype(np.int32),
        data=csr.data.astype(np.float32),
        params=np.array(json.dumps(params)),
    )


def fit(events: Sequence[events_pb2.Event], params: TransitionParams | None = None) -> TransitionModel:
    """Fit on ``events`` (in time order: the events a protocol learns from)."""
    params = params or TransitionParams()
    started = time.perf_counter()
    item_ids = vocabulary(events, params.max_items)
    index = {item: i for i, item in enumerate(item_ids)}
    n = len(item_ids)
    streams = build_streams(events, index)
    if n == 0:
        return TransitionModel(item_ids, sp.csr_matrix(np.zeros((0, 0), dtype=np.float32)), params)
    x, s, t = design(streams, n, params)
    a = params.alpha
    g_sparse = (a * (x.T @ x) + (1.0 - a) * (s.T @ s)).tocsr()
    m = ((1.0 - a) * (s.T @ (t - s))).tocsr().astype(np.float32)
    g = np.zeros((n, n), dtype=np.float32, order="F")
    coo = g_sparse.tocoo()
    g[coo.row, coo.col] = coo.data
    g[np.diag_indices(n)] += params.reg
    del g_sparse, coo
    # The inverse is symmetric: its transpose is the same matrix, C-ordered, without a copy.
    p = _inverse_spd(g).T
    del g
    inverted = time.perf_counter()
    diag_p = np.diag(p).copy()
    keep = min(params.neighbours, n - 1) if n > 1 else 0
    mt = m.T.tocsr()
    m_csc = m.tocsc()
    rows_out: list[IntArray] = []
    cols_out: list[IntArray] = []
    vals_out: list[FloatArray] = []
    # B = I + P M - P diag(c); rows of P M come from the sparse product M' P' (P is symmetric).
    pm_diag = np.empty(n, dtype=np.float32)
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        pm_diag[lo:hi] = np.einsum("ij,ji->i", p[lo:hi], m_csc[:, lo:hi].toarray())
    c = (1.0 + pm_diag) / diag_p
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        block = np.asarray((mt @ p[lo:hi].T).T, dtype=np.float32)  # (P M)[lo:hi]
        block -= p[lo:hi] * c[None, :]
        block[np.arange(hi - lo), np.arange(lo, hi)] = 0.0  # the identity and the constraint cancel here
        if keep:
            top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
            vals = np.take_along_axis(block, top, axis=1)
            positive = vals > 0
            r = np.repeat(np.arange(lo, hi), keep).reshape(hi - lo, keep)
            rows_out.append(r[positive])
            cols_out.append(top[positive])
            vals_out.append(vals[positive])
    neighbours = sp.csr_matrix(
        (
            np.concatenate(vals_out) if vals_out else np.zeros(0, np.float32),
            (
                np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64),
                np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64),
            ),
        ),
        shape=(n, n),
        dtype=np.float32,
    )
    neighbours.sort_indices()
    info = {
        "items": n,
        "users": len(streams.users),
        "transitions": int(s.shape[0]),
        "fit_seconds": round(time.perf_counter() - started, 1),
        "inverse_seconds": round(inverted - started, 1),
    }
    return TransitionModel(item_ids, neighbours, params, info)


def fit_dataset(dataset: Dataset, protocol: str, params: TransitionParams | None = None) -> TransitionModel:
    """Fit on the events ``protocol`` learns from (``trainer.preparation.training_split``: the validation split's)."""
    from trainer.preparation import training_split  # imports no torch at module level

    return fit(training_split(dataset, protocol).train, params)


def fit_and_save(
    dataset: Dataset, protocol: str, out_path: Path, params: TransitionParams | None = None
) -> TransitionModel:
    """Fit on ``dataset`` under ``protocol`` and write ``out_path`` (``transitions.npz`` of a bundle)."""
    model = fit_dataset(dataset, protocol, params)
    model.save(Path(out_path))
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer.models.transitions --data DIR --format F --protocol P --out FILE``: fit and save."""
    import argparse

    from trainer.data.formats import FORMATS, load

    parser = argparse.ArgumentParser(prog="python -m trainer.models.transitions", description=main.__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory of the data set")
    parser.add_argument("--format", choices=FORMATS, required=True, help="format of the data set")
    parser.add_argument(
        "--protocol", choices=("loo", "time-split", "none"), default="loo", help="learn its training part"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write transitions.npz")
    args = parser.parse_args(argv)
    dataset = load(args.format, args.data)
    print(dataset.summary())
    model = fit_and_save(dataset, args.protocol, args.out)
    print(f"wrote {args.out}: {json.dumps(model.info)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
