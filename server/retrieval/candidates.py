"""The candidate matrix of one request: every source's scores, ranks and reasons as columns.

Sources `add` arrays: the item positions they propose (`ItemIndex` positions), a score per position and the
argument of the reason (the seed's number, a category's number, or -1). `finish` puts every proposed position
in one row and builds, per source, a score column (the source's scores summed per item), a rank column (0 is
the source's best item) and a reason-argument column (the argument of the item's largest share). Nothing
per item is a Python object until the answer is written: `reasons` renders strings for the answered rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.retrieval.item_index import Floats, Ints

#: The candidate sources, in column order. Each has a score, a rank and a reason-argument column.
SOURCES = ("covisitation", "brand", "content", "trending", "popular", "learned", "transitions")
COVISITATION, BRAND, CONTENT, TRENDING, POPULAR, LEARNED, TRANSITIONS = range(len(SOURCES))
#: Rank given to items a source did not propose.
ABSENT_RANK = 1_000_000


@dataclass(slots=True)
class CandidateSet:
    """Candidates of one request. Fill with `add`, then call `finish` once; read the columns after it."""

    _parts: list[list[tuple[Ints, Floats, Ints]]] = field(
        default_factory=lambda: [[] for _ in SOURCES]
    )
    #: Item positions, one per row, ascending (after `finish`).
    positions: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: ``[len(SOURCES), rows]``: each source's summed score per row (0 where it proposed nothing).
    scores: Floats = field(default_factory=lambda: np.zeros((len(SOURCES), 0)))
    #: ``[len(SOURCES), rows]``: the row's rank in each source (0 best; `ABSENT_RANK` where not proposed).
    ranks: Ints = field(default_factory=lambda: np.zeros((len(SOURCES), 0), dtype=np.int64))
    #: ``[len(SOURCES), rows]``: the reason argument of the row's largest share in each source (-1: none).
    args: Ints = field(default_factory=lambda: np.zeros((len(SOURCES), 0), dtype=np.int64))
    #: Extra per-row columns that sources record for the ranker's features (name -> column), after `finish`.
    extra: dict[str, Floats] = field(default_factory=dict)
    _extra_parts: dict[str, tuple[Ints, Floats]] = field(default_factory=dict)

    def add(self, source: int, positions: Ints, scores: Floats, args: Ints) -> None:
        """Propose ``positions`` with ``scores`` (> 0 to count) and reason arguments ``args``.

        A position proposed twice by one source gets the sum of its scores and the argument of its largest.
        Negative positions (items outside the index) are dropped.
        """
        keep = (positions >= 0) & (scores > 0.0)
        if not keep.all():
            positions, scores, args = positions[keep], scores[keep], args[keep]
        if len(positions):
            self._parts[source].append((positions, scores, args))

    def add_extra(self, name: str, positions: Ints, values: Floats) -> None:
        """A feature column for the ranker: ``values`` at ``positions`` (0 elsewhere; duplicates summed).

        Positions that no source proposes are ignored.
        """
        keep = positions >= 0
        self._extra_parts[name] = (positions[keep], values[keep])

    def finish(self) -> None:
        """Build the columns: one row per distinct position proposed by any source.

        Every source at once, in a handful of numpy calls (a request has a few hundred candidates, where each
        numpy call's fixed cost is what counts): one sort finds the rows, one `bincount` sums every source's
        scores, one assignment in score order keeps each cell's largest argument, one `lexsort` ranks every
        source.
        """
        k = len(SOURCES)
        parts = [(s, part) for s, source_parts in enumerate(self._parts) for part in source_parts]
        if not parts:
            self.positions = np.zeros(0, dtype=np.int64)
            self.scores = np.zeros((k, 0))
            self.ranks = np.zeros((k, 0), dtype=np.int64)
            self.args = np.zeros((k, 0), dtype=np.int64)
            self.extra = {}
            return
        pos = np.concatenate([p[0] for _, p in parts])
        score = np.concatenate([p[1] for _, p in parts])
        arg = np.concatenate([p[2] for _, p in parts])
        source = np.repeat(np.array([s for s, _ in parts], dtype=np.int64), [len(p[0]) for _, p in parts])
        self.positions, rows = np.unique(pos, return_inverse=True)
        n = len(self.positions)
        cell = source * n + rows
        scores = np.bincount(cell, weights=score, minlength=k * n)
        # Assigning in ascending score order leaves each cell with the argument of its largest share.
        order = np.argsort(score, kind="stable")
        args = np.full(k * n, -1, dtype=np.int64)
        args[cell[order]] = arg[order]
        # Rank within each source by summed score, best first; ties by position (rows are in position order).
        present = np.flatnonzero(scores > 0.0)
        present_source = present // n
        ranked = present[np.lexsort((present % n, -scores[present], present_source))]
        ranked_source = ranked // n
        group_start = np.searchsorted(ranked_source, ranked_source, side="left")
        ranks = np.full(k * n, ABSENT_RANK, dtype=np.int64)
        ranks[ranked] = np.arange(len(ranked), dtype=np.int64) - group_start
        self.scores = scores.reshape(k, n)
        self.ranks = ranks.reshape(k, n)
        self.args = args.reshape(k, n)
        extra: dict[str, Floats] = {}
        for name, (pos, values) in self._extra_parts.items():
            rows = np.searchsorted(self.positions, pos)
            inside = rows < n
            inside[inside] &= self.positions[rows[inside]] == pos[inside]
            extra[name] = np.bincount(rows[inside], weights=values[inside], minlength=n)
        self.extra = extra

    def __len__(self) -> int:
        return len(self.positions)

    def extra_column(self, name: str) -> Floats:
        """An extra column (zeros when no source recorded it)."""
        column = self.extra.get(name)
        return column if column is not None else np.zeros(len(self.positions))
