"""What a bundle proposes for one user state, remembered per state: the learned search, the transitions' and the
item neighbours' lists.

The learned sources read only the user's own interactions (`UserState.recent`) and the bundle, so their work can
be done once per user state instead of on every Recommend: when the fold writes the user (`server.retrieval.warmer`,
off the request path) or at the first request after it. A request then only drops its own exclusions from the
remembered lists. With a context item (the page being viewed) nothing is remembered: the tower runs per call.

The key names a state, not a user: the fold changes ``events_applied`` (and ``last_seen_ms``) with every event it
applies, so a state's proposals can never be served for another state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feature_worker.state import UserState

#: User states whose proposals a bundle remembers, by default (about 2 KiB each: 100,000 is ~0.2 GiB).
DEFAULT_CAPACITY = 100_000

#: Items of the item neighbours' list remembered per state: all that the `item_knn` source serves (there is no
#: exclusion to make room for, unlike the learned search).
KNN_CANDIDATES = 20

#: (user id, events applied, last seen): what `state_key` returns.
StateKey = tuple[str, int, int]


def state_key(user_id: str, user: UserState) -> StateKey:
    """The key of ``user``'s current state: every event the fold applies changes it."""
    return (user_id, user.events_applied, user.last_seen_ms)


@dataclass(frozen=True, slots=True)
class UserProposals:
    """The learned candidates of one user state, before any request's exclusions.

    ``labels``/``scores``: the FAISS search, best first, `searched` wide (the learned source takes fewer and
    drops the request's exclusions from the rest); ``exhausted`` when a wider search could find nothing more.
    ``next_items``/``next_scores``: the transitions' top list (indices into the bundle's transitions), best
    first, ``next_width`` asked; ``knn_items``/``knn_scores`` the same of the item neighbours (``item_knn.npz``),
    `KNN_CANDIDATES` of them.
    Empty arrays when the user has no interaction the bundle knows (or the bundle has no such file).
    """

    labels: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    searched: int
    exhausted: bool
    next_items: npt.NDArray[np.int64]
    next_scores: npt.NDArray[np.float32]
    next_width: int
    knn_items: npt.NDArray[np.int64]
    knn_scores: npt.NDArray[np.float32]


class ProposalCache:
    """The proposals of each user's latest state seen, at most ``capacity`` users, the oldest entry dropped first.

    One entry per user: a newer state replaces the older one, so users who act often do not crowd the others
    out. Read by the event loop without a lock (one dict lookup is atomic); written by the event loop and the
    warmer thread, under a lock so an eviction never races another insert.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: dict[str, tuple[StateKey, UserProposals]] = {}
        self._lock = threading.Lock()

    def get(self, key: StateKey) -> UserProposals | None:
        """The proposals of exactly this state, or None."""
        entry = self._entries.get(key[0])
        return entry[1] if entry is not None and entry[0] == key else None

    def __contains__(self, key: StateKey) -> bool:
        entry = self._entries.get(key[0])
        return entry is not None and entry[0] == key

    def __len__(self) -> int:
        return len(self._entries)

    def forget(self, user_id: str) -> bool:
        """Drop the user's entry (an erasure); True when there was one."""
        with self._lock:
            return self._entries.pop(user_id, None) is not None

    def put(self, key: StateKey, proposals: UserProposals) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            entries = self._entries
            if key[0] not in entries:
                while len(entries) >= self.capacity:
                    del entries[next(iter(entries))]
            entries[key[0]] = (key, proposals)
