"""What a Recommend does about experiments: assign, serve the variant (or interleave two), log the exposure.

`Experiments` is what the engine holds (`Engine.experiments`); without one, or with no experiment running, a
request costs one attribute check and serves exactly as before with variant "default".
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from feature_worker.stores.base import RequestFeatures
from protos.aisle.v1 import events_pb2
from server.experiments.assignment import Assignment
from server.experiments.exposures import ExposureLog
from server.experiments.interleaving import team_draft
from server.experiments.store import ExperimentStore
from server.model_version import MODEL_VERSION
from server.pipeline import Pipeline
from server.recommender import Query, Recommendation, Recommender
from server.retrieval.proposals import StateKey
from server.retrieval.registry import ModelRegistry
from server.retrieval.two_tower import TwoTowerRetriever


@dataclass
class Counts:
    """Answers per variant label and backfilled items, for the server's metrics (event loop thread only)."""

    answers: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    backfilled: dict[str, int] = field(default_factory=dict)
    empty: dict[str, int] = field(default_factory=dict)
    #: Answers per model version served.
    models: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, items: list[Recommendation], model: str) -> int:
        """Count one answer; returns its number of backfilled items."""
        backfilled = 0
        for item in items:
            if item.backfilled:
                backfilled += 1
        self.answers[label] = self.answers.get(label, 0) + 1
        self.items[label] = self.items.get(label, 0) + len(items)
        self.backfilled[label] = self.backfilled.get(label, 0) + backfilled
        if not items:
            self.empty[label] = self.empty.get(label, 0) + 1
        self.models[model] = self.models.get(model, 0) + 1
        return backfilled


#: Answers remembered for live outcome counts (`Outcomes`): about 100 bytes each.
RECENT_ANSWERS = 200_000


@dataclass
class Outcomes:
    """Live outcome counts per variant label, from events that carry a recent answer's recommendation id.

    Approximate on purpose (one process, the last `RECENT_ANSWERS` answers, no window attribution): it feeds the
    live dashboard. The experiment report (`trainer experiment-report`) attributes from the lake, exactly.
    """

    recent: OrderedDict[str, str] = field(default_factory=OrderedDict)
    clicks: dict[str, int] = field(default_factory=dict)
    carts: dict[str, int] = field(default_factory=dict)
    purchases: dict[str, int] = field(default_factory=dict)
    revenue: dict[str, float] = field(default_factory=dict)

    def remember(self, recommendation_id: str, label: str) -> None:
        recent = self.recent
        recent[recommendation_id] = label
        if len(recent) > RECENT_ANSWERS:
            recent.popitem(last=False)

    def count(self, events: Sequence[events_pb2.Event]) -> None:
        for event in events:
            rid = event.recommendation_id
            if not rid:
                continue
            label = self.recent.get(rid)
            if label is None:
                continue
            if event.type == events_pb2.CLICK:
                self.clicks[label] = self.clicks.get(label, 0) + 1
            elif event.type == events_pb2.ADD_TO_CART:
                self.carts[label] = self.carts.get(label, 0) + 1
            elif event.type == events_pb2.PURCHASE:
                self.purchases[label] = self.purchases.get(label, 0) + 1
                amount = event.price * max(event.quantity, 1)
                self.revenue[label] = self.revenue.get(label, 0.0) + amount


class Experiments:
    """The experiments in force (`store`), the exposure log, and the counts the metrics read."""

    def __init__(self, store: ExperimentStore, exposures: ExposureLog | None = None) -> None:
        self.store = store
        self.exposures = exposures
        self.counts = Counts()
        self.outcomes = Outcomes()

    def start(self) -> None:
        self.store.watch()
        if self.exposures is not None:
            self.exposures.start()

    async def close(self) -> None:
        await self.store.close()
        if self.exposures is not None:
            await self.exposures.close()


def learned_for(models: ModelRegistry | None, pipeline: Pipeline | None) -> TwoTowerRetriever | None:
    """The bundle a variant serves: its pinned version, else the promoted one."""
    if models is None:
        return None
    if pipeline is None or not pipeline.bundle_version:
        return models.current
    return models.get(pipeline.bundle_version)


def with_pipeline(query: Query, pipeline: Pipeline | None) -> Query:
    """The query with the variant's default diversity cap when the request left it to the server."""
    if pipeline is None or pipeline.max_per_category is None or query.max_per_category != 0:
        return query
    return replace(query, max_per_category=pipeline.max_per_category)


def interleave(
    recommender: Recommender,
    query: Query,
    features: RequestFeatures,
    models: ModelRegistry | None,
    user_key: StateKey | None,
    assignment: Assignment,
    recommendation_id: str,
) -> tuple[list[Recommendation], list[str], str]:
    """Team-draft interleaving of the assignment's two arms: (items, team per item, model versions served).

    The coin flips are seeded by the recommendation id, so an answer can be recomputed from its id.
    """
    if assignment.interleave is None:
        raise ValueError("the assignment is not an interleaving one")
    _, a, b = assignment.interleave
    rankings: list[list[Recommendation]] = []
    versions: list[str] = []
    for arm in (a, b):
        learned = learned_for(models, arm.pipeline)
        rankings.append(
            recommender.recommend(
                with_pipeline(query, arm.pipeline), features, learned, user_key, None, arm.pipeline
            )
        )
        versions.append(learned.version if learned is not None else MODEL_VERSION)
    by_id: dict[str, Recommendation] = {}
    for ranking in reversed(rankings):  # the first arm's object wins for an item both proposed
        by_id.update((r.item_id, r) for r in ranking)
    ids, teams = team_draft(
        [r.item_id for r in rankings[0]],
        [r.item_id for r in rankings[1]],
        query.k,
        random.Random(recommendation_id),
    )
    model = versions[0] if versions[0] == versions[1] else f"{versions[0]}|{versions[1]}"
    return [by_id[i] for i in ids], [(a.name, b.name)[t] for t in teams], model
