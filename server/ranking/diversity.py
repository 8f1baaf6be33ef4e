"""Diversity after ranking: at most so many items of one category in the answer."""

from __future__ import annotations

import numpy as np

from server.retrieval.item_index import Ints


def cap_per_group(ranked: Ints, groups: Ints, k: int, cap: int) -> Ints:
    """The first ``k`` of ``ranked`` (row numbers, best first) taking at most ``cap`` of any one group.

    ``groups[r]`` is row r's group (-1: none, never capped). Rows passed over for their group come after the
    others, in rank order, only when too few remain to fill ``k``: a short answer is worse than a less
    varied one. ``cap`` <= 0 means no cap.
    """
    if cap <= 0 or len(ranked) <= cap:
        return ranked[:k]
    # Most answers fill from the first few rows: look at those first, at all of them only when they fall short.
    head = ranked[: 4 * k + 4 * cap]
    if len(head) < len(ranked):
        chosen = _capped(head, groups, k, cap, fill=False)
        if len(chosen) >= k:
            return chosen
    return _capped(ranked, groups, k, cap, fill=True)


def _capped(ranked: Ints, groups: Ints, k: int, cap: int, fill: bool) -> Ints:
    taken: list[int] = []
    passed: list[int] = []
    counts: dict[int, int] = {}
    for row, group in zip(ranked.tolist(), groups[ranked].tolist()):
        if group >= 0:
            seen = counts.get(group, 0)
            if seen >= cap:
                passed.append(row)
                continue
            counts[group] = seen + 1
        taken.append(row)
        if len(taken) >= k:
            break
    if fill and len(taken) < k:
        taken.extend(passed[: k - len(taken)])
    return np.array(taken, dtype=np.int64)
