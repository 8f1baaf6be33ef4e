"""The candidate matrix of one request: every source's scores, ranks and reasons as columns.

Sources `add` arrays: the item positions they propose (`ItemIndex` positions), a score per position and the
argument of the reason (the seed's number, a category's number, or -1). `finish` puts every proposed position
in one row and builds, per source, a score column (the source's scores summed per item), a rank column (0 is
the source's best item) and a reason-argument column (the argument of the item's largest share). Nothing
per item is a Python object until the answer is written: `reasons` renders strings for the answered rows only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from server.retrieval.item_index import Floats, Ints
from server.retrieval.kernels import radix_order, sortable, sorted_ints

#: The candidate sources, in column order. Each has a score, a rank and a reason-argument column.
SOURCES = ("covisitation", "brand", "content", "trending", "popular", "learned", "transitions", "item_knn")
COVISITATION, BRAND, CONTENT, TRENDING, POPULAR, LEARNED, TRANSITIONS, ITEM_KNN = range(len(SOURCES))
#: Rank given to items a source did not propose.
ABSENT_RANK = 1_000_000


#: The empty columns of a set with no candidates, shared by every `CandidateSet` (with no element, nothing
#: can be written into them).
_NO_INTS: Ints = np.zeros(0, dtype=np.int64)
_NO_FLOATS: Floats = np.zeros(0)
_NO_SCORES: Floats = np.zeros((len(SOURCES), 0))
_NO_CELLS: Ints = np.zeros((len(SOURCES), 0), dtype=np.int64)


class CandidateSet:
    """Candidates of one request. Fill with `add`, then call `finish` once; read the columns after it.

    A plain class with slots, not a dataclass with default factories: a request makes one, and the factories'
    eight lists and four empty arrays cost 4 µs of it; the empty columns are shared.
    """

    __slots__ = ("_extra_parts", "_parts", "args", "extra", "positions", "ranks", "scores")

    def __init__(self) -> None:
        #: (source, positions, scores, args) as `add`ed, in order.
        self._parts: list[tuple[int, Ints, Floats, Ints]] = []
        self._extra_parts: dict[str, tuple[Ints, Floats]] = {}
        #: Item positions, one per row, ascending (after `finish`).
        self.positions: Ints = _NO_INTS
        #: ``[len(SOURCES), rows]``: each source's summed score per row (0 where it proposed nothing).
        self.scores: Floats = _NO_SCORES
        #: ``[len(SOURCES), rows]``: the row's rank in each source (0 best; `ABSENT_RANK` where not proposed).
        self.ranks: Ints = _NO_CELLS
        #: ``[len(SOURCES), rows]``: the reason argument of the row's largest share in each source (-1: none).
        self.args: Ints = _NO_CELLS
        #: Extra per-row columns that sources record for the ranker's features (name -> column), after `finish`.
        self.extra: dict[str, Floats] = {}

    def add(self, source: int, positions: Ints, scores: Floats, args: Ints) -> None:
        """Propose ``positions`` with ``scores`` (> 0 to count) and reason arguments ``args``.

        A position proposed twice by one source gets the sum of its scores and the argument of its largest.
        Negative positions (items outside the index) are dropped.
        """
        if len(positions):  # the dropping happens once for all sources, in `finish`
            self._parts.append((source, positions, scores, args))

    def added(self, source: int) -> list[tuple[Ints, Floats, Ints]]:
        """What ``source`` has `add`ed so far, in order: (positions, scores, args) per call."""
        return [(p, s, a) for added_by, p, s, a in self._parts if added_by == source]

    def add_extra(self, name: str, positions: Ints, values: Floats) -> None:
        """A feature column for the ranker: ``values`` at ``positions`` (0 elsewhere; duplicates summed).

        Positions that no source proposes are ignored.
        """
        keep = positions >= 0
        self._extra_parts[name] = (positions[keep], values[keep])

    def finish(self) -> None:
        """Build the columns: one row per distinct position proposed by any source.

        Every source at once, in one compiled pass (`_columns`): a request has a few hundred to a thousand
        proposals, where the fixed cost of each numpy call used to be what counted.
        """
        k = len(SOURCES)
        parts = self._parts
        if not parts:  # the columns stay the empty ones `__init__` set
            return
        # In the order added: only the order within a source matters (`_columns`: sums, ties of arguments).
        pos = np.concatenate([p[1] for p in parts])
        score = np.concatenate([p[2] for p in parts]).astype(np.float64, copy=False)
        arg = np.concatenate([p[3] for p in parts])
        source = np.repeat(np.array([p[0] for p in parts], dtype=np.int64), [len(p[1]) for p in parts])
        names = list(self._extra_parts)
        extra_parts = list(self._extra_parts.values())
        if extra_parts:
            extra_pos = np.concatenate([p for p, _ in extra_parts])
            extra_values = np.concatenate([v for _, v in extra_parts]).astype(np.float64, copy=False)
            extra_column = np.repeat(np.arange(len(names), dtype=np.int64), [len(p) for p, _ in extra_parts])
        else:
            extra_pos, extra_values, extra_column = _NO_INTS, _NO_FLOATS, _NO_INTS
        self.positions, self.scores, self.ranks, self.args, extra = _columns(
            pos, score, arg, source, k, ABSENT_RANK, extra_pos, extra_values, extra_column, len(names)
        )
        self.extra = {name: extra[i] for i, name in enumerate(names)}

    def __len__(self) -> int:
        return len(self.positions)

    def extra_column(self, name: str) -> Floats:
        """An extra column (zeros when no source recorded it)."""
        column = self.extra.get(name)
        return column if column is not None else np.zeros(len(self.positions))


@njit(
    "Tuple((i8[:], f8[:, :], i8[:, :], i8[:, :], f8[:, :]))(i8[:], f8[:], i8[:], i8[:], i8, i8, i8[:], f8[:], i8[:],"
    " i8)",
    cache=True,
    nogil=True,
)
def _columns(
    pos: Ints,
    score: Floats,
    arg: Ints,
    source: Ints,
    k: int,
    absent: int,
    extra_pos: Ints,
    extra_values: Floats,
    extra_column: Ints,
    n_extra: int,
) -> tuple[Ints, Floats, Ints, Ints, Floats]:  # pragma: no cover - compiled; tests call it through `finish`
    """(distinct positions ascending, scores, ranks, reason arguments), each column ``[k, rows]``, and the
    extra columns ``[n_extra, rows]`` (``extra_values`` summed per row, by ``extra_column``; values at
    positions no source proposed are dropped).

    Per cell: the sum of the source's scores for the row; the argument of the row's largest single score
    (a tie goes to the later proposal); the rank within the source by summed score, best first, ties by
    position (`ABSENT_RANK`, passed as ``absent``, where the source proposed nothing). Proposals at negative
    positions (items outside the index) or with scores <= 0 are dropped.
    """
    m = len(pos)
    # Rows by a table over the positions proposed (a few tens of kB), not by sorting the proposals: each
    # proposal is then one lookup, and only the distinct positions are sorted.
    size = 0
    for i in range(m):
        size = max(size, pos[i] + 1)
    row_at = np.full(size, -1, dtype=np.int32)
    distinct = np.empty(m, dtype=np.int64)
    n = 0
    for i in range(m):
        p = pos[i]
        if p >= 0 and score[i] > 0.0 and row_at[p] < 0:
            row_at[p] = 0
            distinct[n] = p
            n += 1
    positions = sorted_ints(distinct[:n])
    for r in range(n):
        row_at[positions[r]] = r
    scores = np.zeros((k, n))
    args = np.full((k, n), -1, dtype=np.int64)
    best = np.full((k, n), -np.inf)
    for i in range(m):
        p = pos[i]
        if p < 0 or not score[i] > 0.0:
            continue
        s, r = source[i], row_at[p]
        scores[s, r] += score[i]
        if score[i] >= best[s, r]:
            best[s, r] = score[i]
            args[s, r] = arg[i]
    # Ranks: every (source, row) cell with a score, in one sort by score (best first), not one per source.
    # The cells go in source by source, rows ascending, and the sort is stable, so counting each source's
    # cells in sorted order ranks them by score with ties by position.
    cells = 0
    for s in range(k):
        for r in range(n):
            if scores[s, r] > 0.0:
                cells += 1
    keys = np.empty(cells, dtype=np.uint64)
    cell_source = np.empty(cells, dtype=np.int64)
    cell_row = np.empty(cells, dtype=np.int64)
    c = 0
    for s in range(k):
        for r in range(n):
            if scores[s, r] > 0.0:
                keys[c] = sortable(-scores[s, r])
                cell_source[c] = s
                cell_row[c] = r
                c += 1
    ranks = np.full((k, n), absent, dtype=np.int64)
    next_rank = np.zeros(k, dtype=np.int64)
    for c in radix_order(keys):
        s = cell_source[c]
        ranks[s, cell_row[c]] = next_rank[s]
        next_rank[s] += 1
    extra = np.zeros((n_extra, n))
    for i in range(len(extra_pos)):
        p = extra_pos[i]
        if 0 <= p < size and row_at[p] >= 0:
            extra[extra_column[i], row_at[p]] += extra_values[i]
    return positions, scores, ranks, args, extra
