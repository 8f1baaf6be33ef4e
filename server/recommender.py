"""Recommend: seeds -> candidate sources -> blended score -> rules -> backfill -> reasons.

This object is the serving path. The gRPC service calls it, and so does `trainer evaluate`, so the
accuracy we publish is the accuracy users get.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from feature_worker.catalog import Catalog
from feature_worker.stores.base import RequestFeatures
from server.ranking.rules import Rules
from server.retrieval import sources
from server.retrieval.candidates import Candidates
from server.retrieval.toplists import TopLists

if TYPE_CHECKING:
    from server.retrieval.two_tower import TwoTowerRetriever

MAX_K = 200
DEFAULT_K = 10
#: Popular items entered as candidates; past them, a short list is backfilled in popularity order anyway.
POPULAR_CANDIDATES = 50


@dataclass(frozen=True, slots=True)
class BlendWeights:
    """How much each candidate source counts in the final score (each source scores in [0, 1])."""

    covisitation: float = 1.0
    brand: float = 1.0
    content: float = 0.3
    trending: float = 0.4
    popular: float = 0.15
    #: The learned source (`sources.two_tower`), used only while a model bundle is served. Chosen on Beauty `loo`
    #: validation with a fully trained bundle (`trainer evaluate --bundle … --two-tower-weights 0.5,1,2,4`):
    #: NDCG@10 0.0635 without it, 0.0686 / 0.0708 / 0.0718 / 0.0710 at 0.5 / 1 / 2 / 4.
    two_tower: float = 2.0


@dataclass(frozen=True, slots=True)
class Query:
    """One recommendation request, already validated."""

    user_id: str
    k: int = DEFAULT_K
    context_item_ids: Sequence[str] = ()
    exclude_item_ids: frozenset[str] = frozenset()
    category_prefix: str = ""
    #: False when the customer has not consented to personalization: their features are not used.
    personalize: bool = True


@dataclass(slots=True)
class Recommendation:
    item_id: str
    score: float
    reasons: list[str] = field(default_factory=list)


class Recommender:
    """Turns a query and the features read for it into a ranked, filtered, explained list."""

    def __init__(self, catalog: Catalog, weights: BlendWeights = BlendWeights()) -> None:
        self.catalog = catalog
        self.weights = weights
        self.lists = TopLists()

    def recommend(
        self, query: Query, features: RequestFeatures, learned: TwoTowerRetriever | None = None
    ) -> list[Recommendation]:
        """The top ``query.k``; ``learned`` adds that bundle's two-tower candidates (None: real-time only).

        The caller takes ``learned`` once per request, so one answer never mixes two bundles.
        """
        user = features.user if query.personalize else None
        lists = self.lists
        catalog = self.catalog
        seeds = sources.seeds_for(user, query.context_item_ids)
        # The page's item and the items the user just interacted with are not news to them.
        exclude = set(query.exclude_item_ids)
        exclude.update(seed.item_id for seed in seeds)
        rules = Rules.for_request(catalog, user, exclude, query.category_prefix, lists.clock_ms)

        pool = Candidates()
        w = self.weights
        if not query.personalize:
            features = RequestFeatures(user=None, covis=features.covis)
        sources.covisitation(seeds, features, lists, pool, w.covisitation)
        sources.brand(seeds, catalog, features, lists, pool, w.brand)
        sources.content(seeds, catalog, lists, pool, w.content)
        sources.trending_in_categories(user, lists, pool, w.trending)
        if learned is not None:
            sources.two_tower(learned, user, query.context_item_ids, exclude, pool, w.two_tower)
        # A fixed number, whatever k: the answer for k is then the first k of the answer for any larger k.
        sources.popular(lists, pool, w.popular, rules.category_prefix, limit=POPULAR_CANDIDATES)

        scores = pool.scores
        allowed = [item for item in scores if rules.allows(item)]
        chosen = heapq.nsmallest(query.k, allowed, key=lambda i: (-scores[i], i))
        result = [Recommendation(item, scores[item], pool.top_reasons(item)) for item in chosen]
        if len(result) < query.k:
            self._backfill(result, query.k, rules, lists)
        return result

    def similar_items(
        self,
        item_id: str,
        k: int,
        features: RequestFeatures,
        exclude: Sequence[str] = (),
        category_prefix: str = "",
        learned: TwoTowerRetriever | None = None,
    ) -> list[Recommendation]:
        """Items like `item_id` for anyone: co-visitation, content and learned neighbours, then popular."""
        return self.recommend(
            Query(
                user_id="",
                k=k,
                context_item_ids=(item_id,),
                exclude_item_ids=frozenset(exclude),
                category_prefix=category_prefix,
                personalize=False,
            ),
            features,
            learned,
        )

    def _backfill(self, result: list[Recommendation], k: int, rules: Rules, lists: TopLists) -> None:
        taken = {r.item_id for r in result}
        # Backfilled items score below every blended one, so the order stays honest.
        floor = min((r.score for r in result), default=1.0)
        for item in rules.backfill_order(lists.popular, lists.popular_by_category):
            if item in taken or not rules.allows(item):
                continue
            taken.add(item)
            floor *= 0.99
            result.append(Recommendation(item, floor, ["popular" if item in lists.popularity else "in_catalog"]))
            if len(result) >= k:
                return
