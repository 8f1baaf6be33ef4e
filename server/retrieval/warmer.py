"""Compute the served bundle's proposals for a user when the fold writes them, off the request path.

The learned sources cost most of a Recommend (the user tower, the index search, the transitions' list), yet they
read only the user's own interactions. In the embedded mode the server folds every event itself, so it knows
when a user's state changes: `touch` is called with the new state right after the fold (on the event loop,
where the state is consistent) and a thread of its own computes the proposals in batches
(`TwoTowerRetriever.propose_many`: one tower run per sequence length, one index search for the batch) into the
bundle's cache. A Recommend for that state then finds them ready; one that comes first computes them itself,
as it would without a warmer. When a bundle is swapped in, every user the store holds is touched (`touch_all`).

The thread holds the GIL only to assemble a batch; ONNX Runtime and FAISS release it while they compute.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import islice

from feature_worker.state import UserState
from server.retrieval.proposals import StateKey, state_key
from server.retrieval.sources import TRANSITION_CANDIDATES, TWO_TOWER_CANDIDATES
from server.retrieval.two_tower import TwoTowerRetriever

log = logging.getLogger(__name__)

#: User states computed per batch: big enough that the tower and the index run efficiently, small enough that a
#: bundle swap or a newer state is picked up soon.
BATCH = 256
#: `touch_all` yields to the event loop after this many users, so a swap never stalls requests for long.
TOUCH_CHUNK = 2_000

Interactions = tuple[tuple[int, int, str], ...]


class ProposalWarmer:
    """A background thread that fills the current bundle's `ProposalCache` with the states it is given."""

    def __init__(
        self,
        current: Callable[[], TwoTowerRetriever | None],
        allowed: Callable[[str], bool] = lambda _user_id: True,
        batch: int = BATCH,
    ) -> None:
        """``current`` returns the bundle serving now (read when each batch starts); ``allowed`` says whether a
        user may be personalized for (consent): the others are never computed."""
        self._current = current
        self._allowed = allowed
        self.batch = batch
        #: user id -> the newest state touched and not yet computed (a newer state replaces an older one).
        self._pending: dict[str, tuple[StateKey, Interactions]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        #: States computed since start (for metrics, logs and tests).
        self.computed = 0
        #: Called (in the warmer's thread) with the number of states each batch computed; the server freezes
        #: the collector's view of the heap after much growth (`server.collector.GrowthFreezer`).
        self.on_computed: Callable[[int], None] | None = None
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="aisle-proposals", daemon=True)
        self._thread.start()

    def touch(self, users: Iterable[tuple[str, UserState]]) -> None:
        """Queue these users' current states. Call on the thread that folds (the state must not change while it
        is copied)."""
        allowed = self._allowed
        entries = [
            (user_id, (state_key(user_id, user), tuple(user.recent)))
            for user_id, user in users
            if allowed(user_id)
        ]
        if not entries:
            return
        with self._lock:
            self._pending.update(entries)
            self._idle.clear()
        self._wake.set()

    async def touch_all(self, users: Mapping[str, UserState]) -> int:
        """`touch` every user of ``users`` (the store's), yielding to the event loop between chunks."""
        ids = list(users)
        for start in range(0, len(ids), TOUCH_CHUNK):
            chunk = (
                (user_id, users[user_id]) for user_id in ids[start : start + TOUCH_CHUNK] if user_id in users
            )
            self.touch(chunk)
            await asyncio.sleep(0)
        return len(ids)

    def forget(self, user_id: str) -> bool:
        """Drop the user's state if it is still waiting (an erasure); True when it was."""
        with self._lock:
            return self._pending.pop(user_id, None) is not None

    @property
    def pending(self) -> int:
        """User states touched and not yet computed (including the batch being computed)."""
        return len(self._pending) + self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every touched state has been computed (or ``timeout`` seconds); True when idle."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Stop the thread (pending states are dropped: requests compute their own)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _take(self) -> list[tuple[StateKey, Interactions]]:
        with self._lock:
            pending = self._pending
            taken = [pending.pop(user_id) for user_id in list(islice(pending, self.batch))]
            self._in_flight = len(taken)
            if not taken:
                self._idle.set()
            return taken

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            started, computed = time.perf_counter(), 0
            while not self._closed:
                batch = self._take()
                if not batch:
                    break
                retriever = self._current()
                if retriever is None:
                    continue  # no bundle: nothing to compute; a later swap touches everyone again
                try:
                    done = retriever.propose_many(batch, TWO_TOWER_CANDIDATES, TRANSITION_CANDIDATES)
                except Exception:  # a bad state must not stop the thread: its requests compute their own
                    log.exception("computing learned proposals for %d users failed", len(batch))
                    continue
                computed += done
                self.computed += done
                if done and self.on_computed is not None:
                    self.on_computed(done)
            if computed:
                log.info(
                    "learned proposals computed for %d user states in %.1f s",
                    computed,
                    time.perf_counter() - started,
                )
