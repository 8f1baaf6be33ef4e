"""The feature store interface: what the writer (fold) and the reader (server) need, nothing more."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from feature_worker.fold import ItemDeltas
from feature_worker.state import UserState


@dataclass(slots=True)
class RequestFeatures:
    """Everything one recommendation needs from the store, read at once."""

    user: UserState | None
    #: item -> its co-visited neighbours, strongest first, for the user's recent items and the
    #: requested context items (the in-process store ranks each list when it is first read).
    covis: Mapping[str, list[tuple[str, float]]] = field(default_factory=dict)


@dataclass(slots=True)
class ItemStats:
    """Item-level counters of the whole shop, read at the stream clock.

    `popularity` holds decayed interest (half-life of the fold); `trending` the interest of the last
    24 hours of stream time.
    """

    popularity: dict[str, float]
    trending: dict[str, float]
    clock_ms: int


class FeatureStore(ABC):
    """Stores user features and item counters.

    Writers call `load_users`, fold, then `commit`; a commit applies the users and the item deltas of
    one batch together. Each user is written by one writer at a time (Kafka partitions by user id),
    so load-fold-commit per user needs no locks.
    """

    #: user id -> the group whose commit writes that user, for a store that commits per group (Redis Cluster:
    #: per node), so that the fold splits the item deltas by group (`apply.fold_batch`); None: all at once.
    delta_group: Callable[[str], str] | None = None

    @abstractmethod
    async def load_users(self, user_ids: Collection[str]) -> dict[str, UserState]:
        """The current state of each user, a fresh empty state for users never seen."""

    @abstractmethod
    async def commit(self, users: Mapping[str, UserState], deltas: ItemDeltas) -> None:
        """Write the users' new states and add the item deltas.

        The states and deltas are read before the coroutine first suspends: once a commit has been
        started (one step of the event loop), the caller may go on changing them, which lets the Kafka
        worker fold the next batch while this one is written.
        """

    @abstractmethod
    async def read_request(self, user_id: str, context_item_ids: Sequence[str]) -> RequestFeatures:
        """The user's state and the co-visitation neighbours of their recent and the context items.

        The state's `applied_ids` may be left empty: reading needs no idempotency keys.
        """

    #: True for a store that ranks a co-visitation list when it is read after a change (the in-process one):
    #: the embedded server then ranks changed lists in idle time (`rank_changed`). Redis keeps them ranked.
    ranks_on_read: bool = False

    async def rank_changed(self, limit: int) -> list[tuple[str, list[tuple[str, float]]]]:
        """Rank up to ``limit`` neighbour lists that changed since they were last ranked, as `read_request` would:
        (item, its ranked list) for each. Nothing to do for a store that keeps its lists ranked."""
        return []

    @property
    def unranked(self) -> int:
        """Neighbour lists changed since `rank_changed` last ranked them (0 for a store that keeps them ranked)."""
        return 0

    @abstractmethod
    async def item_stats(self) -> ItemStats:
        """Popularity and trending of every item."""

    @abstractmethod
    async def delete_user(self, user_id: str) -> bool:
        """Forget a user's features; True when there were any."""

    @property
    def version(self) -> int | None:
        """A counter that grows with every commit, by which readers cache views derived from the store (the
        server's top lists); None when the store cannot tell (Redis: other processes write it), and readers
        rebuild on their own schedule instead."""
        return None

    async def recover(self) -> None:
        """Finish what a writer killed mid-commit left half-done (a writer calls it once, before its first
        batch); nothing to do for a store whose commit is one atomic step, which is all but the Redis Cluster's."""

    async def close(self) -> None:
        """Release connections."""
