"""The engine's state and lifecycle: what every service reads, the derived lists, start and close."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from feature_worker.catalog import Catalog
from feature_worker.stores.base import FeatureStore
from feature_worker.users import UserDirectory
from server.ingest import Ingest
from server.recommender import Recommender
from server.retrieval.list_warmer import ListWarmer
from server.retrieval.toplists import TopLists
from server.stages import StageTimes
from server.tasks import stop

if TYPE_CHECKING:
    from server.experiments.serving import Experiments
    from server.privacy.rights import CustomerRights
    from server.retrieval.registry import ModelRegistry

log = logging.getLogger(__name__)


class EngineCore:
    """A catalog, a user directory, a feature store and an ingest, with the popular/trending lists derived from
    them; each service's part of `Engine` builds on this."""

    def __init__(
        self,
        catalog: Catalog,
        users: UserDirectory,
        store: FeatureStore,
        ingest: Ingest,
        lists_refresh_s: float = 1.0,
        models: ModelRegistry | None = None,
    ) -> None:
        self.catalog = catalog
        #: The model bundle served (learned retrieval), None for the real-time sources only.
        self.models = models
        self.users = users
        self.store = store
        self.ingest = ingest
        self.recommender = Recommender(catalog)
        self.lists_refresh_s = lists_refresh_s
        self._lists_key: tuple[int, int] | None = None
        self._refresher: asyncio.Task[None] | None = None
        #: Ranks the store's changed co-visitation lists in idle time, for a store that would rank them on read
        #: (the in-process one, `server.retrieval.list_warmer`); started by `start`.
        self.list_warmer = (
            ListWarmer(store, lambda: self.recommender.lists.index) if store.ranks_on_read else None
        )
        #: Called with each Recommend's stage times (the server's metrics); None records nothing.
        self.stage_observer: Callable[[StageTimes], None] | None = None
        #: Erasure and export of customers (`server.privacy.rights`), set by the server's builder.
        self.rights: CustomerRights | None = None
        #: Experiments in force and the exposure log (`server.experiments`), set by the server's builder; None
        #: serves everyone the default configuration with variant "default" and logs no exposures.
        self.experiments: Experiments | None = None

    # -- derived lists -----------------------------------------------------------------------------
    async def refresh_lists(self, in_thread: bool = False) -> None:
        """Rebuild popular/trending lists when the catalog or the features changed since the last build.

        `in_thread` builds them in a worker thread (the background refresher does): the build sorts the
        whole catalog, tens of milliseconds that would otherwise hold up every request on the event
        loop. A catalog change racing the build at worst fails this build; the next one catches up.
        """
        version = self.store.version
        key = (self.catalog.version, version if version is not None else time.monotonic_ns())
        if key == self._lists_key:
            return
        stats = await self.store.item_stats()
        if in_thread:
            self.recommender.lists = await asyncio.to_thread(TopLists.build, stats, self.catalog)
        else:
            self.recommender.lists = TopLists.build(stats, self.catalog)
        self._lists_key = key

    def start(self) -> None:
        """Refresh the derived lists, and rank changed neighbour lists, in the background, off the request path."""
        if self.lists_refresh_s > 0 and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever())
        if self.list_warmer is not None:
            self.list_warmer.start()
        if self.models is not None:
            self.models.start()
        if self.experiments is not None:
            self.experiments.start()

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh_lists(in_thread=True)
            except Exception:  # a failed refresh keeps serving the previous lists; log and retry
                log.exception("refreshing popular and trending lists failed")
            await asyncio.sleep(self.lists_refresh_s)

    async def close(self) -> None:
        # Waited for, not only cancelled: a refresh still reading the store must be done before it is closed.
        await stop(self._refresher)
        self._refresher = None
        if self.list_warmer is not None:
            await self.list_warmer.close()
        if self.models is not None:
            await self.models.close()
        if self.experiments is not None:
            await self.experiments.close()
        await self.ingest.close()
        await self.store.close()
        if self.rights is not None:
            self.rights.close()
