"""The model bundle being served, and the watcher that hot-swaps it when another one is promoted.

`ModelRegistry.current` is the one reference requests read: a request takes it once, at its start, and uses
that retriever throughout, so one answer never mixes two bundles and a swap never waits for requests.
Promotion (`server.retrieval.bundles.promote`, `rollback`) rewrites ``<bundles_dir>/CURRENT``; the watcher reads it
every `poll_s` seconds and, on a change, loads and checks the new bundle in a worker thread (off the event loop),
then replaces the reference. A bundle that fails to load or to answer a test query is logged and refused: the
previous one keeps serving, and that version is not tried again until ``CURRENT`` names another one.

Experiments may serve other versions beside the promoted one (`pin`): those stay loaded, each once, until no
running experiment names them; `get(version)` is what a variant's request reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from feature_worker.state import UserState
from server.retrieval import bundles
from server.retrieval.bundles import BundleError, BundlePaths
from server.retrieval.two_tower import TwoTowerRetriever, load
from server.retrieval.warmer import ProposalWarmer
from server.tasks import stop

log = logging.getLogger(__name__)


class ModelRegistry:
    """Which `TwoTowerRetriever` serves, kept in step with the bundle promoted under ``bundles_dir``."""

    def __init__(
        self,
        bundles_dir: Path,
        poll_s: float = 2.0,
        loader: Callable[[BundlePaths], TwoTowerRetriever] = load,
    ) -> None:
        self.bundles_dir = Path(bundles_dir)
        self.poll_s = poll_s
        self._loader = loader
        #: The retriever serving now, None before the first successful load (real-time sources only).
        self.current: TwoTowerRetriever | None = None
        #: The promoted version last acted on (served, or refused): the watcher reloads only on a change.
        self._seen: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: Versions experiments serve besides the promoted one (`pin`), loaded.
        self.pinned: dict[str, TwoTowerRetriever] = {}
        #: Computes the served bundle's proposals off the request path (`warm_from`); None: requests do.
        self.warmer: ProposalWarmer | None = None
        self._population: Callable[[], Mapping[str, UserState]] | None = None

    async def warm_from(
        self, population: Callable[[], Mapping[str, UserState]], allowed: Callable[[str], bool]
    ) -> ProposalWarmer:
        """Start the warmer (`server.retrieval.warmer`): every user of ``population()`` (the states the server
        holds) that ``allowed`` (consent to personalization), now and after each swap; the fold touches the
        users it changes."""
        if self.warmer is None:
            self.warmer = ProposalWarmer(lambda: self.current, allowed)
        self._population = population
        await self.warmer.touch_all(population())
        return self.warmer

    @property
    def version(self) -> str | None:
        current = self.current
        return current.version if current is not None else None

    async def check(self) -> bool:
        """Serve the promoted bundle if it changed since the last check; True when a new one was swapped in.

        Loading runs in a worker thread. Errors (a garbled ``CURRENT``, a bundle that will not load) are
        logged and leave the current retriever serving.
        """
        try:
            promoted = bundles.current(self.bundles_dir)
        except (BundleError, OSError) as exc:
            if self._seen != "<unreadable>":
                log.error(
                    "cannot read the promoted bundle in %s: %s; still serving %s",
                    self.bundles_dir,
                    exc,
                    self.version,
                )
                self._seen = "<unreadable>"
            return False
        if promoted == self._seen:
            return False
        self._seen = promoted
        if promoted is None:
            # Nothing promoted (any more): keep whatever serves; a running server does not drop its model.
            return False
        if promoted == self.version:
            return False
        paths = bundles.bundle(self.bundles_dir, promoted)
        try:
            retriever = await asyncio.to_thread(self._loader, paths)
        except BundleError as exc:
            log.error("refused bundle %s: %s; still serving %s", promoted, exc, self.version or "no bundle")
            return False
        except Exception:  # a loader bug must not stop the watcher, nor the old bundle from serving
            log.exception("refused bundle %s: loading failed; still serving %s", promoted, self.version)
            return False
        previous = self.version
        self.current = retriever
        log.info(
            "serving bundle %s (was %s): %d items, dim %d",
            promoted,
            previous or "no bundle",
            len(retriever.item_ids),
            retriever.dim,
        )
        if self.warmer is not None and self._population is not None:
            await self.warmer.touch_all(self._population())
        return True

    def forget(self, user_id: str) -> bool:
        """Drop what every loaded bundle remembers of the user (their proposals, a state waiting for the
        warmer): part of an erasure. True when anything was held."""
        held = self.warmer.forget(user_id) if self.warmer is not None else False
        retrievers = {id(r): r for r in (self.current, *self.pinned.values()) if r is not None}
        for retriever in retrievers.values():
            held = retriever.cache.forget(user_id) or held
        return held

    def get(self, version: str | None) -> TwoTowerRetriever | None:
        """The retriever of ``version`` when loaded (pinned or promoted); the promoted one for None, "", or a
        version that is not loaded (a pin that failed: the answer's model version says what served)."""
        current = self.current
        if not version or (current is not None and current.version == version):
            return current
        return self.pinned.get(version, current)

    async def pin(self, versions: Iterable[str]) -> dict[str, str]:
        """Keep exactly ``versions`` loaded beside the promoted bundle (loading new ones in a worker thread,
        dropping ones no longer named). Returns {version: why it could not be loaded} for the failures; the
        others are loaded when this returns. Memory: one full bundle per pinned version."""
        wanted = set(versions)
        failures: dict[str, str] = {}
        loaded = {version: retriever for version, retriever in self.pinned.items() if version in wanted}
        for version in sorted(wanted - loaded.keys()):
            current = self.current
            if current is not None and current.version == version:
                loaded[version] = current
                continue
            try:
                loaded[version] = await asyncio.to_thread(
                    self._loader, bundles.bundle(self.bundles_dir, version)
                )
            except BundleError as exc:
                failures[version] = str(exc)
            except Exception as exc:  # a loader bug must not take the experiments down with it
                log.exception("pinning bundle %s failed", version)
                failures[version] = f"loading failed: {exc}"
        self.pinned = loaded  # one assignment: a request reads either the old or the new table
        return failures

    def start(self) -> None:
        """Watch ``CURRENT`` every `poll_s` seconds in the background."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except Exception:  # never let the watcher die: log, keep serving, look again next time
                log.exception("checking the promoted bundle failed")

    async def close(self) -> None:
        if self.warmer is not None:
            await asyncio.to_thread(self.warmer.close)
            self.warmer = None
        await stop(self._watcher)
        self._watcher = None
