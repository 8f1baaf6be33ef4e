"""The bounds and formulas every feature store keeps alike, written once: the in-process store and Redis
answer the same reads with the same numbers (`tests/feature_worker/test_stores.py` holds them to it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter

from feature_worker.decay import DAY_MS
from feature_worker.state import UserState

#: How many of the user's latest distinct items seed co-visitation candidates.
RECENT_SEEDS = 10
#: Neighbours returned per seed item.
NEIGHBOURS_PER_SEED = 50
#: Co-visitation neighbours kept per item (`KeyPolicy.covis_cap` on Redis).
COVIS_CAP = 200


def covis_trim_at(cap: int) -> int:
    """A neighbour set is pruned back to `cap` once it grows past this: 1.25 times the cap, so that pruning
    (a sort) runs once per quarter of the cap's worth of new neighbours, not on every one."""
    return cap * 5 // 4


def heaviest(pairs: Iterable[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The ``n`` heaviest of some (id, weight) pairs with distinct ids, heaviest first, equal weights by id so
    answers are deterministic.

    Sorted with C-level keys only, not with a Python key function per pair: a third of the time for the 250
    neighbours of a busy item (20 against 62 µs), which the embedded store's Recommend read pays whenever a seed's
    neighbours changed since the last read.
    """
    if n <= 0:
        return []
    ranked = sorted(pairs, key=_WEIGHT, reverse=True)
    if len(ranked) > n:
        # Only the pairs that weigh as much as the n-th can still change places with it: the rest are cut.
        last, end = ranked[n - 1][1], n
        while end < len(ranked) and ranked[end][1] == last:
            end += 1
        del ranked[end:]
    # By id (distinct, so the weights are never compared), then by weight: a stable sort keeps equal weights in
    # id order.
    ranked.sort()
    ranked.sort(key=_WEIGHT, reverse=True)
    return ranked[:n]


_WEIGHT = itemgetter(1)


def recent_seeds(user: UserState, context_item_ids: Sequence[str]) -> list[str]:
    """The context items, then the user's latest distinct items, up to `RECENT_SEEDS` more."""
    seeds = list(context_item_ids)
    limit = RECENT_SEEDS + len(seeds)
    seen = set(seeds)
    for _, _, item in reversed(user.recent):
        if len(seeds) >= limit:
            break
        if item not in seen:
            seen.add(item)
            seeds.append(item)
    return seeds


def yesterday_share(clock_ms: int) -> float:
    """Trending is a sliding 24 hours of stream time: all of today (UTC) plus this share of yesterday."""
    return 1.0 - (clock_ms - (clock_ms // DAY_MS) * DAY_MS) / DAY_MS
