"""The in-process feature store: the embedded server's store and the evaluation harness's.

State lives in dicts; durability comes from the embedded server's journal, which replays events
through the same fold on start (see `server.embedded.journal`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from feature_worker.decay import DAY_MS, scale_at
from feature_worker.fold import FoldConfig, ItemDeltas
from feature_worker.state import UserState
from feature_worker.stores.base import FeatureStore, ItemStats, RequestFeatures
from feature_worker.stores.bounds import (
    COVIS_CAP,
    NEIGHBOURS_PER_SEED,
    covis_trim_at,
    heaviest,
    recent_seeds,
    yesterday_share,
)

_TRIM_AT = covis_trim_at(COVIS_CAP)


@dataclass(frozen=True, slots=True)
class Frozen:
    """The store's state at one moment, which later commits leave as it is (`MemoryFeatures.freeze`)."""

    users: dict[str, UserState]
    popularity: dict[str, float]
    trend: dict[int, dict[str, float]]
    covis: dict[str, dict[str, float]]
    clock_ms: int


class MemoryFeatures:
    """Features in process memory, and the one implementation of their reads and writes: plain calls, nothing
    awaited, so synchronous callers (the evaluation harness, the ranker's training lists) use them as they are
    and `MemoryFeatureStore` puts them behind the async `FeatureStore` interface for the embedded server.

    `load_users` hands out the live states, so the fold writes in place.
    """

    def __init__(self, config: FoldConfig = FoldConfig()) -> None:
        self.config = config
        self.users: dict[str, UserState] = {}
        self.popularity: dict[str, float] = {}
        self.trend: dict[int, dict[str, float]] = {}  # UTC day -> item -> interest that day
        self.covis: dict[str, dict[str, float]] = {}
        #: item -> its strongest neighbours, sorted; dropped when the item's neighbours change.
        self._covis_sorted: dict[str, list[tuple[str, float]]] = {}
        #: Items whose neighbours changed since `rank_changed` last ranked their list, latest change last.
        self._unranked: dict[str, None] = {}
        self.clock_ms = 0
        self._version = 0
        self._frozen: Frozen | None = None

    def freeze(self) -> Frozen:
        """The state now, for a reader in another thread (a snapshot being written), until `thaw`.

        Copy on write: the dicts of the whole shop are copied now (milliseconds); a user's state is copied
        when a commit is about to change it (`load_users`), and an item's co-visitation neighbours when
        a commit is about to change them, so what `Frozen` holds never changes under its reader.
        """
        self._frozen = Frozen(
            dict(self.users),
            dict(self.popularity),
            {day: dict(weights) for day, weights in self.trend.items()},
            dict(self.covis),
            self.clock_ms,
        )
        return self._frozen

    def thaw(self) -> None:
        """The frozen view is no longer read: commits write in place again."""
        self._frozen = None

    # -- writer side -------------------------------------------------------------------------------
    def load_users(self, user_ids: Collection[str]) -> dict[str, UserState]:
        users = self.users
        frozen = self._frozen
        if frozen is not None:
            for uid in user_ids:
                state = users.get(uid)
                if state is not None and frozen.users.get(uid) is state:  # the fold would write into the view
                    users[uid] = UserState.from_bytes(state.to_bytes(), state.applied_to_bytes())
        return {uid: users.get(uid) or UserState() for uid in user_ids}

    def commit(self, users: Mapping[str, UserState], deltas: ItemDeltas) -> None:
        self.users.update(users)
        frozen_covis = self._frozen.covis if self._frozen is not None else None
        popularity = self.popularity
        for item, weight in deltas.popularity.items():
            popularity[item] = popularity.get(item, 0.0) + weight
        for (item, day), weight in deltas.trend.items():
            bucket = self.trend.setdefault(day, {})
            bucket[item] = bucket.get(item, 0.0) + weight
        covis = self.covis
        stale, unranked = self._covis_sorted, self._unranked
        for (item, other), count in deltas.covis.items():
            stale.pop(item, None)
            unranked.pop(item, None)  # to the end: `rank_changed` takes the latest change first
            unranked[item] = None
            neighbours = covis.get(item)
            if neighbours is None:
                neighbours = covis[item] = {}
            elif frozen_covis is not None and frozen_covis.get(item) is neighbours:
                neighbours = covis[item] = dict(neighbours)
            neighbours[other] = neighbours.get(other, 0.0) + count
            if len(neighbours) > _TRIM_AT:
                _prune(neighbours, COVIS_CAP)
        if deltas.clock_ms > self.clock_ms:
            self.clock_ms = deltas.clock_ms
            today = self.clock_ms // DAY_MS
            for day in [d for d in self.trend if d < today - 1]:
                del self.trend[day]
        self._version += 1

    @property
    def version(self) -> int:
        """Grows with every commit (and every load of a snapshot)."""
        return self._version

    def changed(self) -> None:
        """Count a change made to the state other than by `commit` (a snapshot loaded into it): every neighbour
        list may have changed."""
        self._covis_sorted.clear()
        self._unranked = dict.fromkeys(self.covis)
        self._version += 1

    # -- reader side -------------------------------------------------------------------------------
    def read_request(self, user_id: str, context_item_ids: Sequence[str]) -> RequestFeatures:
        user = self.users.get(user_id)
        seeds = recent_seeds(user, context_item_ids) if user is not None else list(context_item_ids)
        return RequestFeatures(user=user, covis=RankedNeighbours(self, seeds))

    def ranked_neighbours(self, item: str) -> list[tuple[str, float]] | None:
        """The item's strongest `NEIGHBOURS_PER_SEED` neighbours, heaviest first (None: it has none); ranked
        once per change of its neighbours."""
        ranked = self._covis_sorted.get(item)
        if ranked is None:
            neighbours = self.covis.get(item)
            if not neighbours:
                return None
            ranked = self._covis_sorted[item] = heaviest(neighbours.items(), NEIGHBOURS_PER_SEED)
        return ranked

    def rank_changed(self, limit: int) -> list[tuple[str, list[tuple[str, float]]]]:
        """Rank up to ``limit`` of the neighbour lists that changed since this last ranked them, as a read would
        (`ranked_neighbours`), the latest change first: (item, its ranked list) for each that has neighbours.

        For idle time (`server.retrieval.list_warmer`): a Recommend then finds its seeds' lists ranked instead
        of ranking them itself. Lists a read has ranked since are handed out as they are.
        """
        unranked = self._unranked
        done: list[tuple[str, list[tuple[str, float]]]] = []
        while unranked and len(done) < limit:
            # popitem takes the latest: the items customers touch now are the ones their next requests read.
            item = unranked.popitem()[0]
            ranked = self.ranked_neighbours(item)
            if ranked is not None:
                done.append((item, ranked))
        return done

    @property
    def unranked(self) -> int:
        """Neighbour lists changed since `rank_changed` last ranked them (some may have been read since)."""
        return len(self._unranked)

    def item_stats(self) -> ItemStats:
        clock = self.clock_ms
        scale = scale_at(clock, self.config.half_life_ms)
        popularity = {item: weight * scale for item, weight in self.popularity.items()}
        today = clock // DAY_MS
        share = yesterday_share(clock)
        trending = dict(self.trend.get(today, {}))
        for item, weight in self.trend.get(today - 1, {}).items():
            trending[item] = trending.get(item, 0.0) + weight * share
        return ItemStats(popularity=popularity, trending=trending, clock_ms=clock)

    def delete_user(self, user_id: str) -> bool:
        return self.users.pop(user_id, None) is not None


class RankedNeighbours(Mapping[str, list[tuple[str, float]]]):
    """`RequestFeatures.covis` of the in-process store: the seeds' neighbour lists, each ranked when first read.

    A Recommend reads the lists of its first five seeds (`server.retrieval.sources.COVIS_SEEDS`, and brand's of
    the first five with a brand) of the ten the store hands over, and ranking a list whose neighbours changed
    since it was last ranked is most of what the read costs (20 µs for a busy item's 250 neighbours). Read it
    before the store changes again, as every caller does (in the same turn of the event loop, or between two
    commits of a replay).
    """

    __slots__ = ("_features", "_seeds")

    def __init__(self, features: MemoryFeatures, seeds: Sequence[str]) -> None:
        self._features = features
        self._seeds = seeds

    def get(  # type: ignore[override]  # the default is only ever None here
        self, item: str, default: list[tuple[str, float]] | None = None
    ) -> list[tuple[str, float]] | None:
        if item not in self._seeds:
            return default
        ranked = self._features.ranked_neighbours(item)
        return default if ranked is None else ranked

    def __getitem__(self, item: str) -> list[tuple[str, float]]:
        ranked = self.get(item)
        if ranked is None:
            raise KeyError(item)
        return ranked

    def __iter__(self) -> Iterator[str]:
        return (item for item in dict.fromkeys(self._seeds) if self._features.ranked_neighbours(item))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class MemoryFeatureStore(FeatureStore):
    """`MemoryFeatures` behind the `FeatureStore` interface (the embedded server's store): each method is one
    plain call of the core, which never suspends, so a read or a commit costs no await beyond the caller's own
    and no thread hop."""

    ranks_on_read = True

    def __init__(self, config: FoldConfig = FoldConfig()) -> None:
        #: The state and its one implementation; synchronous code (snapshots, tests) uses it directly.
        self.features = MemoryFeatures(config)
        # Bound once: Recommend's read is the embedded server's hot path.
        self._read_request = self.features.read_request

    @property
    def version(self) -> int:
        """Grows with every commit (and every load of a snapshot)."""
        return self.features.version

    async def load_users(self, user_ids: Collection[str]) -> dict[str, UserState]:
        return self.features.load_users(user_ids)

    async def commit(self, users: Mapping[str, UserState], deltas: ItemDeltas) -> None:
        self.features.commit(users, deltas)

    async def read_request(self, user_id: str, context_item_ids: Sequence[str]) -> RequestFeatures:
        return self._read_request(user_id, context_item_ids)

    async def rank_changed(self, limit: int) -> list[tuple[str, list[tuple[str, float]]]]:
        return self.features.rank_changed(limit)

    @property
    def unranked(self) -> int:
        return self.features.unranked

    async def item_stats(self) -> ItemStats:
        return self.features.item_stats()

    async def delete_user(self, user_id: str) -> bool:
        return self.features.delete_user(user_id)


def _prune(neighbours: dict[str, float], cap: int) -> None:
    keep = heaviest(neighbours.items(), cap)
    neighbours.clear()
    neighbours.update(keep)
