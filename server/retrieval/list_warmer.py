"""Rank the co-visitation lists that commits changed in idle time, off the request path (the embedded server).

The in-process store ranks an item's neighbour list when a read first asks for it after its neighbours changed
(`MemoryFeatures.ranked_neighbours`), and the serving path then converts the list to item positions
(`ItemIndex.neighbours`): 30–70 µs a list with the caches cold, for each of up to eight seed lists a Recommend
reads. After a replay or a burst of events most lists are unranked, and the first requests to read them paid
for it: on the 100,000-user shop, 240 µs of a first request's 680 (BENCHMARKS.md, issue 9, ninth pass).

`ListWarmer` does that work between requests: on the event loop (where the store's dicts change, so a list is
never read half-written), a few lists at a time (`CHUNK`, about a millisecond), newest change first, sleeping
after each chunk so that it takes at most `DUTY` of the loop's time. A request that reads a list before the
warmer got to it ranks it itself, as before; the answers are the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from feature_worker.stores.base import FeatureStore
from server.retrieval.item_index import ItemIndex
from server.tasks import stop

log = logging.getLogger(__name__)

#: Lists ranked per turn of the event loop: about a millisecond cold, so a request arriving meanwhile waits
#: little longer than it would behind another request.
CHUNK = 16
#: At most this share of the event loop's time goes to ranking: after a chunk that took t, it sleeps
#: t * (1 - DUTY) / DUTY. After a full replay (20,000 lists, ~1.3 s of work) the lists are ready in ~7 s.
DUTY = 0.2
#: How often an idle warmer looks for changed lists.
IDLE_POLL_S = 0.25


class ListWarmer:
    """A task on the event loop that ranks the store's changed neighbour lists and converts them to positions
    in the current item index (``index()``; None before the first top-list build: ranking only)."""

    def __init__(self, store: FeatureStore, index: Callable[[], ItemIndex | None]) -> None:
        self._store = store
        self._index = index
        self._task: asyncio.Task[None] | None = None
        #: Lists ranked since start (for tests and logs).
        self.ranked = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="aisle-list-warmer")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    @property
    def unranked(self) -> int:
        """Lists changed and not yet ranked here (the store's count)."""
        return self._store.unranked

    async def warm(self, limit: int = CHUNK) -> int:
        """Rank (and convert) up to ``limit`` changed lists now; how many there were."""
        ranked = await self._store.rank_changed(limit)
        index = self._index()
        if index is not None:
            for item, neighbours in ranked:
                index.neighbours(item, neighbours)
        self.ranked += len(ranked)
        return len(ranked)

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            started = clock()
            try:
                done = await self.warm()
            # A failure here must not stop warming for good: requests rank their own lists meanwhile.
            except Exception:
                log.exception("ranking changed co-visitation lists failed")
                done = 0
            if done:
                await asyncio.sleep((clock() - started) * (1.0 - DUTY) / DUTY)
            else:
                await asyncio.sleep(IDLE_POLL_S)
