"""Recommend: validate, read the features in one store call, rank; with experiments, the unit's variant."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from feature_worker.errors import InvalidArgument
from feature_worker.stores.base import RequestFeatures
from feature_worker.validation import check_id
from server.engine.answers import MODEL_VERSION, Answer, now_ms
from server.engine.checks import check_common
from server.engine.core import EngineCore
from server.experiments.assignment import unit_of
from server.experiments.serving import interleave, learned_for, with_pipeline
from server.recommender import DEFAULT_K, Query
from server.retrieval.proposals import StateKey, state_key
from server.stages import StageTimes


class Recommending(EngineCore):
    """Recommend, with experiment assignment, exposure logging and stage timing."""

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
        check_common(k, exclude_item_ids, category_prefix, violations, max_per_category)
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
        user_key = state_key(user_id, user) if personalize and user is not None else None
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
        user_key: StateKey | None,
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
