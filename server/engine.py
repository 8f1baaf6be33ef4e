"""The server's domain core: validation, ingestion, reads and recommendations, with no gRPC in sight.

Services translate messages to calls on `Engine`; tests and tools can call it directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from feature_worker.catalog import Catalog
from feature_worker.errors import InvalidArgument, NotFound
from feature_worker.stores.base import FeatureStore, RequestFeatures
from feature_worker.users import UserDirectory
from feature_worker.validation import (
    MAX_TEXT_LEN,
    check_id,
    check_text,
    validate_event,
    validate_item,
    validate_user,
)
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from server.experiments.assignment import unit_of
from server.experiments.serving import interleave, learned_for, with_pipeline
from server.ingest import Ingest
from server.profile import build_profile
from server.recommender import DEFAULT_K, DEFAULT_MAX_PER_CATEGORY, MAX_K, Query, Recommendation, Recommender
from server.retrieval.toplists import TopLists
from server.stages import StageTimes

if TYPE_CHECKING:
    from server.experiments.serving import Experiments
    from server.privacy.rights import CustomerRights
    from server.retrieval.registry import ModelRegistry

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_EXCLUDE = 1000
#: Reported in every answer served without a model bundle; with one, its version is reported instead.
MODEL_VERSION = "realtime-blend-1"


@dataclass(slots=True)
class TrackResult:
    accepted: int
    duplicates: int
    rejected: list[tuple[int, str, str]]  # (index, field, reason)


@dataclass(slots=True)
class Answer:
    items: list[Recommendation]
    recommendation_id: str
    variant: str
    model_version: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    """Everything the services do, over a catalog, a user directory, a feature store and an ingest."""

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
        #: Called with each Recommend's stage times (the server's metrics); None records nothing.
        self.stage_observer: Callable[[StageTimes], None] | None = None
        #: Erasure and export of customers (`server.privacy.rights`), set by the server's builder.
        self.rights: CustomerRights | None = None
        #: Experiments in force and the exposure log (`server.experiments`), set by the server's builder; None
        #: serves everyone the default configuration with variant "default" and logs no exposures.
        self.experiments: Experiments | None = None

    # -- writes ------------------------------------------------------------------------------------
    async def track(self, events: Sequence[events_pb2.Event]) -> TrackResult:
        """Validate each event; record the good ones and report the bad ones by index.

        Events stamped 0 get the receive time. A batch size outside 1..MAX_BATCH is refused whole.
        """
        if not 1 <= len(events) <= MAX_BATCH:
            raise InvalidArgument([("events", f"must hold 1 to {MAX_BATCH} events, got {len(events)}")])
        now = now_ms()
        good: list[events_pb2.Event] = []
        rejected: list[tuple[int, str, str]] = []
        for index, event in enumerate(events):
            problems = validate_event(event, now)
            if problems:
                rejected.extend((index, field, reason) for field, reason in problems)
                continue
            if event.ts_ms == 0:
                stamped = events_pb2.Event()
                stamped.CopyFrom(event)
                stamped.ts_ms = now
                event = stamped
            good.append(event)
        duplicates = await self.ingest.events(good) if good else 0
        if self.experiments is not None and good:
            self.experiments.outcomes.count(good)
        if self.lists_refresh_s <= 0:
            await self.refresh_lists()
        return TrackResult(accepted=len(good), duplicates=duplicates, rejected=rejected)

    async def upsert_items(self, items: Sequence[catalog_pb2.Item]) -> int:
        """All or nothing: a catalog update with a bad item is refused whole, naming each problem."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidArgument([("items", f"must hold 1 to {MAX_BATCH} items, got {len(items)}")])
        violations = [
            (f"items[{i}].{field}", reason)
            for i, item in enumerate(items)
            for field, reason in validate_item(item)
        ]
        if violations:
            raise InvalidArgument(violations)
        await self.ingest.upsert_items(items)
        return len(items)

    async def delete_items(self, item_ids: Sequence[str]) -> int:
        if not 1 <= len(item_ids) <= MAX_BATCH:
            raise InvalidArgument([("item_ids", f"must hold 1 to {MAX_BATCH} ids, got {len(item_ids)}")])
        violations: list[tuple[str, str]] = []
        for i, item_id in enumerate(item_ids):
            check_id(item_id, f"item_ids[{i}]", violations)
        if violations:
            raise InvalidArgument(violations)
        return await self.ingest.delete_items(item_ids)

    async def upsert_user(self, user: users_pb2.User) -> None:
        violations = [(f"user.{field}", reason) for field, reason in validate_user(user)]
        if violations:
            raise InvalidArgument(violations)
        await self.ingest.upsert_user(user)

    # -- reads -------------------------------------------------------------------------------------
    def get_item(self, item_id: str) -> catalog_pb2.Item:
        violations: list[tuple[str, str]] = []
        check_id(item_id, "item_id", violations)
        if violations:
            raise InvalidArgument(violations)
        item = self.catalog.record(item_id)
        if item is None:
            raise NotFound(f"item {item_id!r} is not in the catalog")
        return item

    async def profile(self, user_id: str) -> users_pb2.Profile:
        violations: list[tuple[str, str]] = []
        check_id(user_id, "user_id", violations)
        if violations:
            raise InvalidArgument(violations)
        features = await self.store.read_request(user_id, ())
        clock = max(self.recommender.lists.clock_ms, features.user.last_seen_ms if features.user else 0)
        return build_profile(user_id, features.user, self.users.get(user_id), clock or now_ms())

    async def recommend(
        self,
        user_id: str,
        k: int,
        context_item_id: str = "",
        exclude_item_ids: Sequence[str] = (),
        category_prefix: str = "",
        max_per_category: int = 0,
        explain: bool = True,
        session_id: str = "",
    ) -> Answer:
        """Validate, read the user's features in one store call, rank, filter and explain; with experiments,
        serve the variant of the user (or, without a user, of the session) and log the exposure."""
        violations: list[tuple[str, str]] = []
        check_id(user_id, "user_id", violations, required=False)
        check_id(session_id, "session_id", violations, required=False)
        check_id(context_item_id, "context_item_id", violations, required=False)
        _check_common(k, exclude_item_ids, category_prefix, violations, max_per_category)
        if not user_id and not context_item_id:
            violations.append(("user_id", "a user_id or a context_item_id is required"))
        if violations:
            raise InvalidArgument(violations)
        if self.lists_refresh_s <= 0:
            await self.refresh_lists()
        context = (context_item_id,) if context_item_id else ()
        personalize = bool(user_id) and self.users.personalization_allowed(user_id)
        observer = self.stage_observer
        started = time.perf_counter() if observer is not None or self.experiments is not None else 0.0
        features = await self.store.read_request(user_id if personalize else "", context)
        read_done = time.perf_counter() if observer is not None else 0.0
        query = Query(
            user_id=user_id,
            k=k or DEFAULT_K,
            context_item_ids=context,
            exclude_item_ids=frozenset(exclude_item_ids),
            category_prefix=category_prefix,
            personalize=personalize,
            max_per_category=max_per_category,
            explain=explain,
        )
        # One snapshot of the served bundle for the whole request: a hot swap never mixes two versions.
        learned = self.models.current if self.models is not None else None
        user = features.user
        # Names the user's state: the fold changes both numbers with every event it applies.
        user_key = (
            (user_id, user.events_applied, user.last_seen_ms) if personalize and user is not None else None
        )
        times = StageTimes(read=read_done - started) if observer is not None else None
        if self.experiments is not None:
            return self._experiment(query, features, user_key, times, session_id, context_item_id, started)
        items = self.recommender.recommend(query, features, learned, user_key, times)
        if observer is not None and times is not None:
            observer(times)
        return Answer(items, os.urandom(12).hex(), "default", learned.version if learned else MODEL_VERSION)

    def _experiment(
        self,
        query: Query,
        features: RequestFeatures,
        user_key: object,
        times: StageTimes | None,
        session_id: str,
        context_item_id: str,
        started: float,
    ) -> Answer:
        """`recommend` with experiments: the unit's variant (or two, interleaved), counted and logged."""
        experiments = self.experiments
        if experiments is None:
            raise RuntimeError("no experiments configured")
        assignment = experiments.store.assigner.assign(unit_of(query.user_id, session_id))
        recommendation_id = os.urandom(12).hex()
        teams: list[str] = []
        if assignment.interleave is not None:
            items, teams, model = interleave(
                self.recommender, query, features, self.models, user_key, assignment, recommendation_id
            )
        else:
            pipeline = assignment.pipeline
            learned = learned_for(self.models, pipeline)
            items = self.recommender.recommend(
                with_pipeline(query, pipeline), features, learned, user_key, times, pipeline
            )
            model = learned.version if learned else MODEL_VERSION
            if self.stage_observer is not None and times is not None:
                self.stage_observer(times)
        backfilled = experiments.counts.add(assignment.label, items, model)
        if assignment.experiments:
            experiments.outcomes.remember(recommendation_id, assignment.label)
        log = experiments.exposures
        if log is not None and (not query.user_id or self.users.analytics_allowed(query.user_id)):
            served_us = int((time.perf_counter() - started) * 1e6)
            log.record(
                (
                    recommendation_id,
                    query.user_id,
                    session_id,
                    now_ms(),
                    assignment.label,
                    assignment.experiments,
                    [r.item_id for r in items],
                    teams,
                    model,
                    backfilled,
                    served_us,
                    context_item_id,
                )
            )
        return Answer(items, recommendation_id, assignment.label, model)

    async def similar_items(
        self, item_id: str, k: int, exclude_item_ids: Sequence[str] = (), category_prefix: str = ""
    ) -> list[Recommendation]:
        return (await self.similar(item_id, k, exclude_item_ids, category_prefix)).items

    async def similar(
        self,
        item_id: str,
        k: int,
        exclude_item_ids: Sequence[str] = (),
        category_prefix: str = "",
        max_per_category: int = 0,
    ) -> Answer:
        """`similar_items` with the model version that answered (no recommendation id)."""
        violations: list[tuple[str, str]] = []
        check_id(item_id, "item_id", violations)
        _check_common(k, exclude_item_ids, category_prefix, violations, max_per_category)
        if violations:
            raise InvalidArgument(violations)
        if self.lists_refresh_s <= 0:
            await self.refresh_lists()
        features = await self.store.read_request("", (item_id,))
        learned = self.models.current if self.models is not None else None
        items = self.recommender.similar_items(
            item_id, k or DEFAULT_K, features, exclude_item_ids, category_prefix, learned, max_per_category
        )
        return Answer(items, "", "default", learned.version if learned else MODEL_VERSION)

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
        """Refresh the derived lists in the background, off the request path."""
        if self.lists_refresh_s > 0 and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever())
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
        if self._refresher is not None:
            self._refresher.cancel()
        if self.models is not None:
            await self.models.close()
        if self.experiments is not None:
            await self.experiments.close()
        await self.ingest.close()
        await self.store.close()
        if self.rights is not None:
            self.rights.close()


def _check_common(
    k: int,
    exclude: Sequence[str],
    category_prefix: str,
    violations: list[tuple[str, str]],
    max_per_category: int = 0,
) -> None:
    if not 0 <= k <= MAX_K:
        violations.append(("k", f"must be from 1 to {MAX_K} (0 means {DEFAULT_K}), got {k}"))
    if not -1 <= max_per_category <= MAX_K:
        violations.append(
            (
                "max_per_category",
                f"must be from 1 to {MAX_K} (0 means {DEFAULT_MAX_PER_CATEGORY}, -1 no cap), got {max_per_category}",
            )
        )
    if len(exclude) > MAX_EXCLUDE:
        violations.append(("exclude_item_ids", f"has more than {MAX_EXCLUDE} ids"))
    else:
        for i, item in enumerate(exclude):
            check_id(item, f"exclude_item_ids[{i}]", violations)
    check_text(category_prefix, "category_prefix", MAX_TEXT_LEN, violations)
