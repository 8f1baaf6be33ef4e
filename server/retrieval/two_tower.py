"""Learned retrieval from one model bundle: the user tower in ONNX Runtime, then the item index in FAISS; and the
bundle's re-ranker (`server.ranking.ranker`), loaded and swapped with them.

A `TwoTowerRetriever` is loaded once from a bundle directory (`server.retrieval.bundles`) and never changes; the
server swaps whole retrievers when another bundle is promoted (`server.retrieval.registry`). The tower reads
the user's latest interactions exactly as the fold keeps them (`UserState.recent`), so a click folded a
millisecond ago changes the very next vector: no retraining, no batch job.

ONNX Runtime and FAISS each run on one thread: a second one never helped a single request on these
machines (DESIGN.md), and several server processes share the cores instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from sys import intern
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from numba import njit

from feature_worker.fold import VIEW
from server.ranking.ranker import Ranker
from server.retrieval.bundles import INPUT_ITEMS, INPUT_TYPES, OUTPUT_USER, RANKER, BundleError, BundlePaths
from server.retrieval.item_index import ItemIndex
from server.retrieval.kernels import contains, is_in
from server.retrieval.onnx_session import single_thread_session
from server.retrieval.proposals import (
    DEFAULT_CAPACITY,
    KNN_CANDIDATES,
    ProposalCache,
    StateKey,
    UserProposals,
)
from server.retrieval.transitions import ItemTransitions, load_optional

log = logging.getLogger(__name__)

#: HNSW indexes search this wide unless the bundle's meta says otherwise (``index.ef_search``).
DEFAULT_EF_SEARCH = 128
#: Inverted-file indexes probe this many lists unless the bundle's meta says otherwise (``index.nprobe``).
DEFAULT_NPROBE = 16
#: At most this many excluded items are searched past (beyond ``n``): the request's own exclusions
#: (the page's item and recent items) fit; a client excluding a thousand ids gets fewer learned candidates.
MAX_EXTRA = 64


class TwoTowerRetriever:
    """The user tower and the item index of one bundle, with the item id maps.

    Loading is safe in any thread; the loaded object is then only read (and its proposal cache written under a
    lock), so the event loop and the warmer's thread use it at once.
    """

    def __init__(self, paths: BundlePaths, cache_capacity: int = DEFAULT_CAPACITY) -> None:
        """Load the bundle at ``paths``; `BundleError` when a file is missing, unreadable or inconsistent.
        ``cache_capacity``: user states whose proposals are remembered (`proposals`)."""
        paths.check()
        meta = paths.read_meta()
        self.paths = paths
        self.meta = meta
        self.version: str = paths.version
        self.max_len = _positive_int(meta, "max_len", paths)
        self.dim = _positive_int(meta, "dim", paths)
        params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
        temperature = params.get("temperature", 1.0) if isinstance(params, dict) else 1.0
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise BundleError(
                f"{paths.meta}: params.temperature must be a positive number, got {temperature!r}"
            )
        #: Softmax temperature of the training loss: ``exp((s - best) / temperature)`` is the probability of
        #: an item relative to the best one (see `relative_scores`).
        self.temperature = float(temperature)
        # Interned, as the catalog's and the fold's ids are, so `index_of` finds them by identity.
        self.item_ids: list[str] = list(map(intern, paths.read_item_ids()))
        #: External id -> item index (``1 + line``; 0 is padding).
        self.index_of: dict[str, int] = {item: j + 1 for j, item in enumerate(self.item_ids)}
        if len(self.index_of) != len(self.item_ids):
            raise BundleError(f"{paths.item_ids}: item ids are not unique")

        self.session = single_thread_session(paths.user_tower, "user tower")
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        for name in (INPUT_ITEMS, INPUT_TYPES):
            if name not in inputs or inputs[name].type != "tensor(int64)":
                raise BundleError(f"{paths.user_tower}: needs an int64 input {name!r}, has {sorted(inputs)}")
        if OUTPUT_USER not in outputs:
            raise BundleError(f"{paths.user_tower}: needs an output {OUTPUT_USER!r}, has {outputs}")
        #: Whether the tower takes any sequence length (bundles exported since the length axis became dynamic);
        #: older towers take exactly ``max_len`` positions, left-padded.
        self.dynamic_length = not isinstance(inputs[INPUT_ITEMS].shape[1], int)

        try:
            faiss.omp_set_num_threads(1)
            self.index = faiss.read_index(str(paths.item_index))
        except Exception as exc:  # faiss raises RuntimeError with the C++ message
            raise BundleError(f"{paths.item_index}: cannot read the item index: {exc}") from exc
        if self.index.d != self.dim:
            raise BundleError(f"{paths.item_index}: dimension {self.index.d}, meta.json says {self.dim}")
        if self.index.ntotal != len(self.item_ids):
            raise BundleError(
                f"{paths.item_index}: {self.index.ntotal} vectors for {len(self.item_ids)} item ids"
            )
        found_meta = meta.get("index")
        index_meta: dict[str, Any] = found_meta if isinstance(found_meta, dict) else {}
        hnsw = getattr(self.index, "hnsw", None)
        if hnsw is not None:
            ef = index_meta.get("ef_search")
            hnsw.efSearch = int(ef) if isinstance(ef, int) and ef > 0 else DEFAULT_EF_SEARCH
        if isinstance(self.index, faiss.IndexIVF):
            # The probes the export chose for its recall target (`trainer.export.build_index`).
            nprobe = index_meta.get("nprobe")
            self.index.nprobe = int(nprobe) if isinstance(nprobe, int) and nprobe > 0 else DEFAULT_NPROBE

        #: The bundle's item transitions (a candidate source), None when the bundle has none.
        self.transitions: ItemTransitions | None = load_optional(paths.transitions)
        #: The bundle's whole-history item neighbours (a candidate source), None when the bundle has none.
        self.item_knn: ItemTransitions | None = load_optional(paths.item_knn)
        #: Catalog positions of the transitions' and the neighbours' items, for the `ItemIndex` they were computed
        #: for (see `transition_positions`).
        self._transition_positions: tuple[ItemIndex, np.ndarray] | None = None
        self._knn_positions: tuple[ItemIndex, np.ndarray] | None = None
        self._label_positions: tuple[ItemIndex, np.ndarray] | None = None
        #: The bundle's learned re-ranker, None when the bundle has none (the blend ranks).
        self.ranker: Ranker | None = None
        if paths.ranker.is_file():
            ranker_meta = meta.get("ranker")
            if not isinstance(ranker_meta, dict):
                raise BundleError(
                    f"{paths.meta}: the bundle has {RANKER} but no 'ranker' object in meta.json"
                )
            self.ranker = Ranker(paths.ranker, ranker_meta)

        self._outputs = [OUTPUT_USER]
        #: What this bundle proposed for recent user states (see `proposals`).
        self.cache = ProposalCache(cache_capacity)

    @classmethod
    def load(cls, paths: BundlePaths, cache_capacity: int = DEFAULT_CAPACITY) -> TwoTowerRetriever:
        """Load and check the bundle: one query must give a finite vector of the bundle's dimension."""
        retriever = cls(paths, cache_capacity)
        retriever.self_check()
        return retriever

    def self_check(self) -> None:
        """Run one query end to end (the first item, viewed); `BundleError` if anything is off."""
        if not self.item_ids:
            raise BundleError(f"{self.paths.item_ids}: no items")
        try:
            vector = self.encode([(0, VIEW, self.item_ids[0])], ())
            found = self.search(vector, 1, ()) if vector is not None else []
        except BundleError:
            raise
        except Exception as exc:  # whatever the runtime raises on a graph that does not fit the contract
            raise BundleError(f"{self.paths.root}: a test query failed: {exc}") from exc
        if vector is None or vector.shape != (1, self.dim) or not np.isfinite(vector).all():
            shape = None if vector is None else vector.shape
            raise BundleError(
                f"{self.paths.root}: the user tower gave {shape}, expected (1, {self.dim}) finite"
            )
        if not found:
            raise BundleError(f"{self.paths.root}: the item index found nothing for a test query")

    def encode(
        self, recent: Sequence[tuple[int, int, str]], context_item_ids: Sequence[str]
    ) -> np.ndarray | None:
        """The user vector (float32 ``[1, dim]``) for these interactions, or None when none is known.

        ``recent`` is ``UserState.recent``: (ts_ms, EventType, item_id), oldest first. Items unknown to the
        bundle are dropped; the context items (the page being viewed) follow as views, so they are the newest.
        The last ``max_len`` of them fill the right end of the tower's input (`_known`); towers of a fixed length
        get the rest as 0 (padding), dynamic ones only the real interactions (the same output, in about half
        the time).
        """
        sequence = self._known(recent, context_item_ids)
        if not sequence[0]:
            return None
        vector: np.ndarray = self._run([sequence], len(sequence[0]))
        return vector

    def proposals(
        self,
        recent: Sequence[tuple[int, int, str]],
        context_item_ids: Sequence[str],
        key: StateKey | None,
        n: int,
        next_n: int,
    ) -> UserProposals:
        """The learned search (``n`` wanted), the transitions' ``next_n`` best and the item neighbours'
        `KNN_CANDIDATES` best for these interactions.

        Remembered under ``key`` (`server.retrieval.proposals.state_key` of the state ``recent`` comes from)
        when there is no context item, so an unchanged user costs a dict lookup; with context items (the page
        being viewed) it is computed for every call.
        """
        remember = key if not context_item_ids else None
        if remember is not None:
            found = self.cache.get(remember)
            if found is not None and found.searched >= self._width(n) and found.next_width == next_n:
                return found
        vector = self.encode(recent, context_item_ids)
        width = self._width(n)
        if vector is None:
            labels, scores = _NO_ITEMS, _NO_SCORES
        else:
            found_scores, found_labels = self.index.search(vector, width)
            labels, scores = found_labels[0], found_scores[0]
        proposals = self._proposal(labels, scores, width, recent, context_item_ids, next_n)
        if remember is not None:
            self.cache.put(remember, proposals)
        return proposals

    def propose_many(
        self, states: Sequence[tuple[StateKey, Sequence[tuple[int, int, str]]]], n: int, next_n: int
    ) -> int:
        """`proposals` for many user states at once, remembered: the tower runs once per sequence length and the
        index once for all. What the warmer (`server.retrieval.warmer`) calls in its own thread; safe beside
        requests. States already remembered are skipped; returns how many were
        computed."""
        width = self._width(n)
        todo = [(key, recent) for key, recent in states if key not in self.cache]
        if not todo:
            return 0
        vectors = self._encode_many([recent for _, recent in todo])
        known = [i for i, vector in enumerate(vectors) if vector is not None]
        labels = np.zeros((0, width), dtype=np.int64)
        scores = np.zeros((0, width), dtype=np.float32)
        if known:
            scores, labels = self.index.search(np.stack([v for v in vectors if v is not None]), width)
        row_of = {i: row for row, i in enumerate(known)}
        for i, (key, recent) in enumerate(todo):
            row = row_of.get(i)
            if row is None:
                proposals = self._proposal(_NO_ITEMS, _NO_SCORES, width, recent, (), next_n)
            else:
                proposals = self._proposal(labels[row], scores[row], width, recent, (), next_n)
            self.cache.put(key, proposals)
        return len(todo)

    def learned_positions(
        self,
        proposals: UserProposals,
        n: int,
        index: ItemIndex,
        exclude: np.ndarray,
        recent: Sequence[tuple[int, int, str]],
        context_item_ids: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The learned source's (positions in ``index``, inner products), best first, at most ``n``, none of the
        positions ``exclude`` and none outside the catalog: the first ``n`` of the remembered search that
        survive; searched again, wider, only when too many of it are excluded."""
        positions, scores = _first_allowed(
            self.label_positions(index),
            proposals.labels,
            proposals.scores,
            np.asarray(exclude, dtype=np.int64),
            n,
        )
        if len(positions) >= n or proposals.exhausted:
            return positions, scores
        vector = self.encode(recent, context_item_ids)
        if vector is None:  # the proposals were computed from these interactions, so this cannot happen
            return positions, scores
        return self.search_positions(vector, n, index, exclude)

    def _width(self, n: int) -> int:
        """How many nearest items a remembered search holds: ``n`` plus room for a request's exclusions."""
        return min(n + MAX_EXTRA, len(self.item_ids))

    def _proposal(
        self,
        labels: np.ndarray,
        scores: np.ndarray,
        width: int,
        recent: Sequence[tuple[int, int, str]],
        context_item_ids: Sequence[str],
        next_n: int,
    ) -> UserProposals:
        found = labels >= 0  # HNSW and IVF may find fewer than asked
        transitions = self.transitions
        if transitions is not None and next_n > 0:
            next_items, next_scores = transitions.top(recent, context_item_ids, next_n)
        else:
            next_items, next_scores = _NO_ITEMS, _NO_SCORES
        item_knn = self.item_knn
        if item_knn is not None and next_n > 0:
            knn_items, knn_scores = item_knn.top(recent, context_item_ids, KNN_CANDIDATES)
        else:
            knn_items, knn_scores = _NO_ITEMS, _NO_SCORES
        return UserProposals(
            labels=labels[found],
            scores=scores[found],
            searched=width,
            # Nothing more to find: the whole index was searched, the index ran out, or there is no vector.
            exhausted=width >= len(self.item_ids) or len(labels) < width or not found.all(),
            next_items=next_items,
            next_scores=next_scores,
            next_width=next_n,
            knn_items=knn_items,
            knn_scores=knn_scores,
        )

    def _encode_many(self, recents: Sequence[Sequence[tuple[int, int, str]]]) -> list[np.ndarray | None]:
        """`encode` of many users without context items (each ``[dim]``, None when no item is known): one tower
        run per distinct sequence length, so each vector is what `encode` gives."""
        sequences = [self._known(recent, ()) for recent in recents]
        out: list[np.ndarray | None] = [None] * len(recents)
        groups: dict[int, list[int]] = {}
        for i, (items, _) in enumerate(sequences):
            if items:
                groups.setdefault(len(items), []).append(i)
        for length, members in groups.items():
            vectors = self._run([sequences[i] for i in members], length)
            for row, i in enumerate(members):
                out[i] = vectors[row]
        return out

    def _known(
        self, recent: Sequence[tuple[int, int, str]], context_item_ids: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        """(item indices, event types) of the last ``max_len`` interactions the bundle knows, oldest first, the
        context items last (as views)."""
        index_of, max_len = self.index_of, self.max_len
        items: list[int] = []
        types: list[int] = []
        for item in reversed(context_item_ids):
            j = index_of.get(item)
            if j is not None and len(items) < max_len:
                items.append(j)
                types.append(VIEW)
        for i in range(len(recent) - 1, -1, -1):
            if len(items) >= max_len:
                break
            _, etype, item = recent[i]
            j = index_of.get(item)
            if j is not None:
                items.append(j)
                types.append(etype)
        items.reverse()
        types.reverse()
        return items, types

    def _run(self, sequences: Sequence[tuple[list[int], list[int]]], length: int) -> np.ndarray:
        """The tower over ``sequences`` of ``length`` interactions each (``[len(sequences), dim]``); towers of a
        fixed length get them left-padded to ``max_len``."""
        width = length if self.dynamic_length else self.max_len
        items_in = np.zeros((len(sequences), width), dtype=np.int64)
        types_in = np.zeros((len(sequences), width), dtype=np.int64)
        for row, (items, types) in enumerate(sequences):
            items_in[row, width - len(items) :] = items
            types_in[row, width - len(types) :] = types
        vectors: np.ndarray = self.session.run(self._outputs, {INPUT_ITEMS: items_in, INPUT_TYPES: types_in})[
            0
        ]
        return vectors

    def transition_positions(self, index: ItemIndex) -> np.ndarray:
        """Position in ``index`` of each item of the bundle's transitions (-1: not in the catalog), computed once
        per index (a new catalog version brings a new index)."""
        cached = self._transition_positions
        if cached is None or cached[0] is not index:
            cached = self._transition_positions = (index, _positions_in(self.transitions, index))
        return cached[1]

    def knn_positions(self, index: ItemIndex) -> np.ndarray:
        """`transition_positions` of the bundle's item neighbours."""
        cached = self._knn_positions
        if cached is None or cached[0] is not index:
            cached = self._knn_positions = (index, _positions_in(self.item_knn, index))
        return cached[1]

    def label_positions(self, index: ItemIndex) -> np.ndarray:
        """Position in ``index`` of each FAISS label (-1: not in the catalog), computed once per index."""
        cached = self._label_positions
        if cached is not None and cached[0] is index:
            return cached[1]
        positions = index.positions(self.item_ids, len(self.item_ids))
        self._label_positions = (index, positions)
        return positions

    def search_positions(
        self, vector: np.ndarray, n: int, index: ItemIndex, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`search` for the serving path: (positions in ``index``, inner products), best first, at most ``n``,
        none of the positions ``exclude`` and none outside the catalog; no item id is touched."""
        label_positions = self.label_positions(index)

        def keep(labels: np.ndarray) -> np.ndarray:
            positions = label_positions[labels]
            wanted: np.ndarray = positions >= 0
            if len(exclude):
                wanted &= ~is_in(positions, exclude)
            return wanted

        labels, scores = self._nearest(vector, n, len(exclude), keep)
        return label_positions[labels], scores

    def search(self, vector: np.ndarray, n: int, exclude: Collection[str]) -> list[tuple[str, float]]:
        """The ``n`` items of highest inner product with ``vector``, best first, none of ``exclude``."""
        item_ids = self.item_ids

        def keep(labels: np.ndarray) -> np.ndarray:
            return np.array([item_ids[label] not in exclude for label in labels.tolist()], dtype=bool)

        labels, scores = self._nearest(vector, n, len(exclude), keep)
        return [(item_ids[label], score) for label, score in zip(labels.tolist(), scores.tolist())]

    def _nearest(
        self, vector: np.ndarray, n: int, excluded: int, keep: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(FAISS labels, inner products) of the ``n`` nearest items that ``keep`` (a mask over labels) keeps.

        Searches ``n`` plus room for the ``excluded`` items (at most `MAX_EXTRA`) at once; only when that falls
        short (many excluded items among the nearest) does it search again, wider.
        """
        total = len(self.item_ids)
        k = min(n + min(excluded, MAX_EXTRA), total)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        while True:
            scores, labels = self.index.search(vector, k)
            found = labels[0] >= 0  # HNSW and IVF may find fewer than asked
            labels_found, scores_found = labels[0][found], scores[0][found]
            wanted = keep(labels_found)
            labels_kept, scores_kept = labels_found[wanted][:n], scores_found[wanted][:n]
            if len(labels_kept) >= n or k >= total or not found.all():
                return labels_kept, scores_kept
            k = min(total, 2 * k + excluded)

    def log_relative(self, scores: np.ndarray) -> np.ndarray:
        """``(score - best) / temperature`` for scores best first: the log of `relative_scores`."""
        if not len(scores):
            return np.zeros(0)
        relative: np.ndarray = (scores.astype(np.float64) - float(scores[0])) / self.temperature
        return relative

    def relative_scores(self, found: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        """Scores in (0, 1]: ``exp((score - best) / temperature)``, the best item 1.

        With a tower trained by softmax at this temperature, that is each item's probability relative to the
        best item's, a scale that means the same for every user (unlike the raw inner products) and that
        does not shrink when many items are likely (unlike the probabilities themselves).
        """
        relative = np.exp(self.log_relative(np.array([score for _, score in found], dtype=np.float64)))
        return [(item, float(r)) for (item, _), r in zip(found, relative.tolist())]


def load(paths: BundlePaths, cache_capacity: int = DEFAULT_CAPACITY) -> TwoTowerRetriever:
    """`TwoTowerRetriever.load`, as a plain function (what the registry calls in a thread)."""
    return TwoTowerRetriever.load(paths, cache_capacity)


_NO_ITEMS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)


@njit(
    [
        "Tuple((i8[:], f4[:]))(i8[:], i8[:], f4[:], i8[:], i8)",
        "Tuple((i8[:], f8[:]))(i8[:], i8[:], f8[:], i8[:], i8)",
    ],
    cache=True,
    nogil=True,
)
def _first_allowed(
    label_positions: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
    scores: npt.NDArray[np.floating[Any]],
    exclude: npt.NDArray[np.int64],
    n: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.floating[Any]]]:  # pragma: no cover - compiled
    """(positions in the index, scores) of the first ``n`` searched ``labels`` that are in the index
    (``label_positions[label] >= 0``) and not in ``exclude``: one pass instead of six numpy calls."""
    positions = np.empty(min(n, len(labels)), dtype=np.int64)
    kept = np.empty(len(positions), dtype=scores.dtype)
    at = 0
    for i in range(len(labels)):
        if at >= len(positions):
            break
        p = label_positions[labels[i]]
        if p >= 0 and not contains(exclude, p):
            positions[at] = p
            kept[at] = scores[i]
            at += 1
    return positions[:at], kept[:at]


def _positive_int(meta: dict[str, Any], key: str, paths: BundlePaths) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BundleError(f"{paths.meta}: {key} must be a positive integer, got {value!r}")
    return value


def _positions_in(lists: ItemTransitions | None, index: ItemIndex) -> np.ndarray:
    """Position in ``index`` of each item of ``lists`` (-1: not in the catalog; empty without lists)."""
    ids = lists.item_ids if lists is not None else []
    return index.positions(ids, len(ids))
