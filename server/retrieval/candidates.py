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
        """Build the columns: one row per distinct position proposed by any source."""
        chunks = [p for parts in self._parts for p, _, _ in parts]
        if not chunks:
            self.positions = np.zeros(0, dtype=np.int64)
            n = 0
        else:
            self.positions = np.unique(np.concatenate(chunks))
            n = len(self.positions)
        k = len(SOURCES)
        scores = np.zeros((k, n))
        ranks = np.full((k, n), ABSENT_RANK, dtype=np.int64)
        args = np.full((k, n), -1, dtype=np.int64)
        for s, parts in enumerate(self._parts):
            if not parts:
                continue
            if len(parts) == 1:
                pos, score, arg = parts[0]
            else:
                pos = np.concatenate([p[0] for p in parts])
                score = np.concatenate([p[1] for p in parts])
                arg = np.concatenate([p[2] for p in parts])
            rows = np.searchsorted(self.positions, pos)
            column = np.bincount(rows, weights=score, minlength=n)
            scores[s] = column
            # Assigning in ascending score order leaves each row with the argument of its largest share.
            order = np.argsort(score, kind="stable")
            args[s, rows[order]] = arg[order]
            present = np.flatnonzero(column > 0.0)
            # Rank by score, best first; ties by position (deterministic).
            by_score = present[np.lexsort((present, -column[present]))]
            ranks[s, by_score] = np.arange(len(by_score), dtype=np.int64)
        self.scores, self.ranks, self.args = scores, ranks, args
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
