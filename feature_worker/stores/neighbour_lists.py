"""Co-visitation lists read from Redis, decoded once per content instead of once per request.

Every Recommend in the Kafka + Redis mode reads its seeds' neighbour lists (up to 50 pairs each, ten seeds) in
the read script's reply. Decoding a list (bytes to str, scores to floats, ranked) and then the server's turning
its ids into catalog positions (`server.retrieval.item_index.ItemIndex.neighbours`) cost about a quarter of the
handler's CPU in that mode (py-spy, 100k shop), yet a list read again is usually the one read before: only
events on that seed change it.

So `NeighbourLists` keeps, per seed, the raw reply it last decoded and the list it made of it. A reply equal to
the kept one (a C-level comparison of a hundred bytes objects) gets the same list object back, which the server
finds already converted (it remembers conversions per list object). A reply that differs in any member or score
is decoded afresh, so the answer is always that of the reply: nothing is served stale.
"""

from __future__ import annotations

from typing import Any

from feature_worker.stores.bounds import NEIGHBOURS_PER_SEED, heaviest

#: Seeds whose last list is kept per store; past this many the memory starts over (about 10 KiB each with the
#: raw reply: ~0.5 GiB at most, and the server's conversions hold the same list objects).
MAX_LISTS = 50_000

Ranked = list[tuple[str, float]]


class NeighbourLists:
    """Decodes the read script's ``seed, top, ties`` triples, remembering each seed's last reply and list."""

    def __init__(self, capacity: int = MAX_LISTS) -> None:
        self.capacity = capacity
        #: seed as it came in the reply -> (its id, the reply's `top` and `ties`, the ranked list made of them).
        self._kept: dict[Any, tuple[str, Any, Any, Ranked]] = {}
        #: Lists decoded afresh and lists handed out again (for tests and benchmarks).
        self.decoded = 0
        self.reused = 0

    def decode(self, out: list[Any], start: int = 2) -> dict[str, Ranked]:
        """Each seed's neighbours, ranked by count (ties by item id), from the triples at ``out[start:]``.

        The lists returned may be handed out again: callers must not change them.
        """
        covis: dict[str, Ranked] = {}
        kept = self._kept
        for i in range(start, len(out), 3):
            seed, top, ties = out[i], out[i + 1], out[i + 2]
            found = kept.get(seed)
            if found is not None and found[1] == top and found[2] == ties:
                self.reused += 1
                covis[found[0]] = found[3]
                continue
            name = decoded(seed)
            ranked = _ranked(top, ties)
            self.decoded += 1
            if len(kept) >= self.capacity:
                kept.clear()
            kept[seed] = (name, top, ties, ranked)
            covis[name] = ranked
        return covis


def _ranked(top: list[Any], ties: Any) -> Ranked:
    """One seed's ``ZREVRANGE ... WITHSCORES`` reply and the members tied with its last, ranked."""
    ranked = [(decoded(top[j]), float(top[j + 1])) for j in range(0, len(top), 2)]
    if ties:
        last = ranked[-1][1]
        ranked = [pair for pair in ranked if pair[1] > last] + [(decoded(t), last) for t in ties]
    return heaviest(ranked, NEIGHBOURS_PER_SEED)


def decoded(value: bytes | str) -> str:
    """A reply's string as text (the Redis clients hand out bytes; the Cluster store's triples carry str)."""
    return value.decode() if isinstance(value, bytes) else value
