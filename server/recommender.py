"""Recommend: seeds -> candidate sources (columnar) -> rules -> features -> ranker (or blend) -> diversity
-> backfill -> reasons.

The rules filter rows and the ranker scores each row on its own, so filtering first gives the same answer
as ranking first, without featurising and scoring the rows that would be thrown away.

This object is the serving path. The gRPC service calls it, `trainer evaluate` calls it, and `trainer train`
builds the ranker's training lists with its `retrieve` and `features`, so the accuracy we publish is the
accuracy users get and the ranker learns from exactly what it is served.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from numba import njit

from feature_worker.catalog import Catalog
from feature_worker.state import UserState
from feature_worker.stores.base import ItemStats, RequestFeatures
from server.pipeline import Pipeline
from server.ranking.diversity import top_rows
from server.ranking.features import feature_matrix
from server.ranking.rules import Rules
from server.retrieval import sources
from server.retrieval.candidates import (
    BRAND,
    CONTENT,
    COVISITATION,
    ITEM_KNN,
    LEARNED,
    POPULAR,
    SOURCES,
    TRANSITIONS,
    TRENDING,
    CandidateSet,
)
from server.retrieval.item_index import Floats, Ints, ItemIndex
from server.retrieval.proposals import StateKey
from server.retrieval.toplists import TopLists
from server.stages import StageTimes

if TYPE_CHECKING:
    from server.retrieval.two_tower import TwoTowerRetriever

MAX_K = 200
DEFAULT_K = 10
#: Diversity: at most this many items of one (leaf) category in an answer, unless the request says otherwise
#: (`Query.max_per_category`). Chosen on validation splits (see BENCHMARKS.md): a cap this loose costs no
#: accuracy there and still keeps one category from filling a whole page.
DEFAULT_MAX_PER_CATEGORY = 5
#: Reasons shown per item.
MAX_REASONS = 3


@dataclass(frozen=True, slots=True)
class BlendWeights:
    """How much each candidate source counts in the blended score (each source scores in [0, 1]).

    The blend ranks when the served bundle has no learned ranker (or none is served); with one, it only
    orders each item's reasons.
    """

    covisitation: float = 1.0
    brand: float = 1.0
    content: float = 0.3
    trending: float = 0.4
    popular: float = 0.15
    #: The learned source (`sources.two_tower`), used only while a model bundle is served. Chosen on Beauty `loo`
    #: validation with a fully trained bundle (`trainer evaluate --bundle … --two-tower-weights 0.5,1,2,4`):
    #: NDCG@10 0.0635 without it, 0.0686 / 0.0708 / 0.0718 / 0.0710 at 0.5 / 1 / 2 / 4.
    two_tower: float = 2.0
    transitions: float = 0.0
    #: The whole-history item neighbours (`sources.item_knn`): for the ranker; the blend was chosen without them.
    item_knn: float = 0.0

    def vector(self) -> Floats:
        """The weights in `SOURCES` order."""
        return np.array(
            [
                self.covisitation,
                self.brand,
                self.content,
                self.trending,
                self.popular,
                self.two_tower,
                self.transitions,
                self.item_knn,
            ]
        )


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
    #: At most this many items of one category; 0 means `DEFAULT_MAX_PER_CATEGORY`, -1 no cap.
    max_per_category: int = 0
    #: Render reasons (False saves their cost when the client did not ask for them).
    explain: bool = True


@dataclass(slots=True)
class Recommendation:
    item_id: str
    score: float
    reasons: list[str] = field(default_factory=list)
    #: Filler after the ranked items ran out (popular or in-catalog), not a ranked candidate.
    backfilled: bool = False


@dataclass(slots=True)
class Retrieved:
    """One request after retrieval: the candidates and everything ranking and the rules read."""

    query: Query
    user: UserState | None
    seeds: list[sources.Seed]
    lists: TopLists
    index: ItemIndex
    pool: CandidateSet
    rules: Rules
    #: The variant's serving configuration (None: the default one).
    pipeline: Pipeline | None = None


class Recommender:
    """Turns a query and the features read for it into a ranked, filtered, explained list."""

    def __init__(
        self, catalog: Catalog, weights: BlendWeights = BlendWeights(), use_ranker: bool = True
    ) -> None:
        self.catalog = catalog
        self.weights = weights
        self._weights = weights.vector()
        #: With False the blend ranks even when the bundle has a ranker (`trainer evaluate`'s blend rows).
        self.use_ranker = use_ranker
        self.lists = TopLists()

    def recommend(
        self,
        query: Query,
        features: RequestFeatures,
        learned: TwoTowerRetriever | None = None,
        user_key: StateKey | None = None,
        times: StageTimes | None = None,
        pipeline: Pipeline | None = None,
    ) -> list[Recommendation]:
        """The top ``query.k``; ``learned`` serves that bundle's two-tower candidates and ranker (None:
        real-time sources and the blend only). ``times``, when given, gets the time of each stage.
        ``pipeline`` (an experiment variant's configuration) overrides the ranker switch, blend weights and
        sources; None serves the default way.

        The caller takes ``learned`` once per request, so one answer never mixes two bundles.
        """
        clock = time.perf_counter
        t0 = clock() if times is not None else 0.0
        stage = self.retrieve(query, features, learned, user_key, pipeline)
        t1 = clock() if times is not None else 0.0
        # The rules first: refused rows are never featurised nor scored (see the module's docstring).
        allowed = stage.rules.allowed_rows(stage.index, stage.pool.positions)
        t_allowed = clock() if times is not None else 0.0
        use_ranker = (
            self.use_ranker if pipeline is None or pipeline.use_ranker is None else pipeline.use_ranker
        )
        ranker = learned.ranker if learned is not None and use_ranker else None
        if ranker is not None:
            matrix = self.features(stage, allowed)
            t2 = clock() if times is not None else 0.0
            scores: Floats = ranker.score(matrix).astype(np.float64)
        else:
            t2 = t_allowed
            scores = self.blend(stage.pool, pipeline.weights if pipeline is not None else None)[allowed]
        t3 = clock() if times is not None else 0.0
        result = self.choose(stage, allowed, scores)
        if times is not None:
            times.retrieval, times.features, times.ranking = t1 - t0, t2 - t_allowed, t3 - t2
            times.rules = (t_allowed - t1) + (clock() - t3)
        return result

    def retrieve(
        self,
        query: Query,
        features: RequestFeatures,
        learned: TwoTowerRetriever | None = None,
        user_key: StateKey | None = None,
        pipeline: Pipeline | None = None,
    ) -> Retrieved:
        """Every candidate source into one `CandidateSet` (finished); ``pipeline`` may leave some out."""
        lists, index = self._current_lists()
        user = features.user if query.personalize else None
        seeds = sources.seeds_for(user, query.context_item_ids, index)
        # The page's item and the items the user just interacted with are not news to them.
        exclude = set(query.exclude_item_ids)
        exclude.update(seed.item_id for seed in seeds)
        rules = Rules.for_request(self.catalog, user, exclude, query.category_prefix, lists.clock_ms)
        if not query.personalize:
            features = RequestFeatures(user=None, covis=features.covis)
        pool = CandidateSet()
        # An experiment variant may leave sources out (`Pipeline.sources`); every request else runs them all.
        allows = pipeline.allows if pipeline is not None else _every_source
        with_learned = learned is not None and (allows(LEARNED) or allows(TRANSITIONS) or allows(ITEM_KNN))
        tails = sources.TAILS_WITH_BUNDLE if with_learned else sources.TAILS
        if allows(COVISITATION):
            sources.covisitation(seeds, features, lists, index, pool)
        if allows(BRAND):
            sources.brand(seeds, features, lists, index, pool, tails.brand_per_seed)
        if allows(CONTENT):
            sources.content(seeds, lists, index, pool)
        if allows(TRENDING):
            sources.trending_in_categories(user, lists, index, pool, tails.trending_per_category)
        if learned is not None and with_learned:
            proposals = sources.learned_proposals(learned, user, query.context_item_ids, user_key)
            if allows(LEARNED):
                blocked = sources.blocked_positions(seeds, query.exclude_item_ids, index)
                sources.two_tower(learned, proposals, user, query.context_item_ids, blocked, index, pool)
            if allows(TRANSITIONS):
                sources.transitions(learned, proposals, index, pool)
            if allows(ITEM_KNN):
                sources.item_knn(learned, proposals, index, pool)
        if allows(POPULAR):
            # A fixed number, whatever k: the answer for k is then the first k of the answer for any larger k.
            sources.popular(lists, index, pool, rules.category_prefix, limit=tails.popular)
        pool.finish()
        return Retrieved(query, user, seeds, lists, index, pool, rules, pipeline)

    def blend(self, pool: CandidateSet, weights: Floats | None = None) -> Floats:
        """The blended score of every candidate (`BlendWeights`, or ``weights`` in `SOURCES` order): what
        ranks without a learned ranker."""
        scores: Floats = (self._weights if weights is None else weights) @ pool.scores
        return scores

    def features(self, stage: Retrieved, rows: Ints | None = None) -> npt.NDArray[np.float32]:
        """The ranker's feature matrix of the candidates (`server.ranking.features`), of ``rows`` only when
        given."""
        return feature_matrix(
            stage.pool, stage.index, stage.lists, stage.user, stage.seeds, stage.lists.clock_ms, rows
        )

    def choose(self, stage: Retrieved, allowed: Ints, scores: Floats) -> list[Recommendation]:
        """Diversity, the top k (ties by item id), backfill and reasons, among the ``allowed`` rows (the rules',
        `Rules.allowed_rows`) scored ``scores`` (one per allowed row)."""
        query, pool, index = stage.query, stage.pool, stage.index
        cap = DEFAULT_MAX_PER_CATEGORY if query.max_per_category == 0 else query.max_per_category
        # A few spare rows: the live catalog may have changed since the index was built (checked below).
        picked = top_rows(scores, allowed, pool.positions, stage.lists.items, query.k + 5, cap)
        chosen = allowed[picked]
        result: list[Recommendation] = []
        ids = index.ids
        # The mask is the rules over the index's catalog version: checked again item by item only when the
        # catalog changed since (an item deleted or out of stock in between).
        allows = stage.rules.allows if index.version != self.catalog.version else None
        rows: list[int] = []
        for row, position, score in zip(
            chosen.tolist(), pool.positions[chosen].tolist(), scores[picked].tolist()
        ):
            item = ids[position]
            if allows is not None and not allows(item):
                continue
            result.append(Recommendation(item, score))
            rows.append(row)
            if len(result) >= query.k:
                break
        if query.explain and rows:
            for recommendation, reasons in zip(result, self._reasons(stage, rows)):
                recommendation.reasons = reasons
        if len(result) < query.k:
            self._backfill(result, query.k, stage.rules, stage.lists, index)
        return result

    def similar_items(
        self,
        item_id: str,
        k: int,
        features: RequestFeatures,
        exclude: Sequence[str] = (),
        category_prefix: str = "",
        learned: TwoTowerRetriever | None = None,
        max_per_category: int = 0,
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
                max_per_category=max_per_category,
            ),
            features,
            learned,
        )

    def _current_lists(self) -> tuple[TopLists, ItemIndex]:
        """The lists requests read, with the index they were built with."""
        lists = self.lists
        if lists.index is None:
            # Before the first build: the catalog's items, no counters yet.
            lists = self.lists = TopLists.build(ItemStats({}, {}, lists.clock_ms), self.catalog)
        if lists.index is None:  # `TopLists.build` always sets one
            raise RuntimeError("TopLists.build gave lists without an item index")
        return lists, lists.index

    def _reasons(self, stage: Retrieved, rows: list[int]) -> list[list[str]]:
        """For each row: the sources that proposed it, by weighted share, rendered with their seed or category."""
        pool = stage.pool
        weights = (
            self._weights
            if stage.pipeline is None or stage.pipeline.weights is None
            else stage.pipeline.weights
        )
        found, found_args = _reason_order(
            np.maximum(weights, 0.01).astype(np.float64),
            pool.scores,
            pool.args,
            np.array(rows, dtype=np.int64),
        )
        order, args = found.tolist(), found_args.tolist()
        out: list[list[str]] = []
        for j, row in enumerate(rows):
            reasons: list[str] = []
            for source, arg in zip(order[j], args[j]):
                if source < 0:
                    break
                reason = _render(stage, source, arg, row)
                if reason not in reasons:
                    reasons.append(reason)
                    if len(reasons) >= MAX_REASONS:
                        break
            out.append(reasons)
        return out

    def _backfill(
        self, result: list[Recommendation], k: int, rules: Rules, lists: TopLists, index: ItemIndex
    ) -> None:
        taken = {r.item_id for r in result}
        # Backfilled items score below every ranked one, so the order stays honest.
        floor = min((r.score for r in result), default=1.0)
        prefix = rules.category_prefix
        popular = lists.popular_in(prefix) if prefix else lists.popular_pos
        names = index.names(popular)
        for item in rules.backfill_order(names):
            if item in taken or not rules.allows(item):
                continue
            taken.add(item)
            floor -= 0.01 * abs(floor) + 1e-6
            result.append(
                Recommendation(
                    item, floor, ["popular" if item in lists.popularity else "in_catalog"], backfilled=True
                )
            )
            if len(result) >= k:
                return


def _every_source(source: int) -> bool:
    return True


def _render(stage: Retrieved, source: int, arg: int, row: int) -> str:
    seeds, index = stage.seeds, stage.index
    seed = seeds[arg].item_id if 0 <= arg < len(seeds) else ""
    if source == COVISITATION:
        return f"co_viewed_with:{seed}"
    if source == BRAND:
        return f"same_brand_as:{seed}"
    if source == CONTENT:
        p, s = stage.pool.positions[row], seeds[arg].position if 0 <= arg < len(seeds) else -1
        same = s >= 0 and index.brand[s] >= 0 and index.brand[s] == index.brand[p]
        return f"same_brand_as:{seed}" if same else f"similar_to:{seed}"
    if source == TRENDING:
        return f"trending_in:{index.category_names[arg]}" if arg >= 0 else "trending"
    if source == POPULAR:
        return f"popular_in:{index.category_names[arg]}" if arg >= 0 else "popular"
    if source == LEARNED:
        return "learned"
    if source == TRANSITIONS:
        return f"often_next_after:{seed}" if seed else "learned"
    if source == ITEM_KNN:
        return "customers_also_liked"
    return SOURCES[source]


@njit("Tuple((i8[:, :], i8[:, :]))(f8[:], f8[:, :], i8[:, :], i8[:])", cache=True, nogil=True)
def _reason_order(
    weights: Floats, scores: Floats, args: Ints, rows: Ints
) -> tuple[Ints, Ints]:  # pragma: no cover - compiled
    """Per row: the sources that proposed it by weighted share, largest first (equal shares in source order),
    then -1; and each one's reason argument."""
    k = len(weights)
    order = np.full((len(rows), k), -1, dtype=np.int64)
    found_args = np.full((len(rows), k), -1, dtype=np.int64)
    shares = np.empty(k)
    for j in range(len(rows)):
        row = rows[j]
        count = 0
        for source in range(k):
            share = weights[source] * scores[source, row]
            if not share > 0.0:
                continue
            # Insertion keeps equal shares in source order (a stable sort of a handful).
            at = count
            while at > 0 and shares[at - 1] < share:
                shares[at] = shares[at - 1]
                order[j, at] = order[j, at - 1]
                at -= 1
            shares[at] = share
            order[j, at] = source
            count += 1
        for at in range(count):
            found_args[j, at] = args[order[j, at], row]
    return order, found_args
