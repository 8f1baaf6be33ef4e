"""The bounds and formulas every feature store keeps alike, written once: the in-process store and Redis
answer the same reads with the same numbers (`tests/feature_worker/test_stores.py` holds them to it)."""

from __future__ import annotations

from collections.abc import Sequence

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


def by_weight_desc(pair: tuple[str, float]) -> tuple[float, str]:
    """Sort key of (id, weight) pairs: heaviest first, ties broken by id so answers are deterministic."""
    return (-pair[1], pair[0])


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
