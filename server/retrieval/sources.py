"""Real-time candidate sources. Each adds scored, explained items to a `Candidates` pool.

Scores of one source lie in [0, 1] (times the seed's weight where a seed is involved) so the blend weights
(`BlendWeights`) mean the same thing for every user. The constants below were chosen on validation splits
(`python -m trainer evaluate ... --split valid`: Amazon Beauty, its timestamped copy, a generated shop); see
BENCHMARKS.md for the figures.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from feature_worker.catalog import Catalog
from feature_worker.fold import ADD_TO_CART, CLICK, PURCHASE, REMOVE_FROM_CART, VIEW
from feature_worker.state import UserState
from feature_worker.stores.base import RequestFeatures
from server.retrieval.candidates import Candidates
from server.retrieval.toplists import TopLists

if TYPE_CHECKING:
    from server.retrieval.two_tower import TwoTowerRetriever

#: How strongly a past interaction of each type seeds "more like this".
SEED_TYPE_WEIGHT: dict[int, float] = {VIEW: 1.0, CLICK: 1.2, ADD_TO_CART: 1.5, PURCHASE: 1.0, REMOVE_FROM_CART: 0.2}
#: Each older seed counts this much less than the one after it.
SEED_RECENCY_DECAY = 0.65
#: The page the user is on says more about intent right now than any past interaction.
CONTEXT_SEED_WEIGHT = 2.0
MAX_SEEDS = 10
#: Seeds whose category and brand neighbours are added (content source).
CONTENT_SEEDS = 3
CONTENT_PER_SEED = 20
TRENDING_CATEGORIES = 3
TRENDING_PER_CATEGORY = 30
#: Seeds whose co-visited items are candidates: older ones weigh under a fifth of the latest (0.65 ** 4) and
#: cost as much to score; all `MAX_SEEDS` are still excluded from the answer.
COVIS_SEEDS = 5
#: A seed's co-visitation counts are divided by (its total co-visits) ** this: 1 would make them the share of
#: the seed's co-visits (what customers did next, as a probability), 0 lets a seed with many co-visits drown
#: the others.
COVIS_SEED_EXPONENT = 0.5
#: ... and by (the neighbour's popularity) ** this, so the shop's best sellers do not follow every seed.
#: Popularity is decayed (what is popular now), which is also a signal, hence a small exponent.
COVIS_POPULARITY_EXPONENT = 0.15
#: Popularity below this (about one fresh view) does not raise a neighbour further: it is noise, or stale.
COVIS_POPULARITY_FLOOR = 1.0
#: Seeds whose brand's best sellers are added (brand source), and how many of each.
BRAND_SEEDS = 5
BRAND_PER_SEED = 30
#: Within a brand, best sellers lead, but gently: score = (popularity / the brand's best) ** this.
BRAND_POPULARITY_EXPONENT = 0.25
#: Co-visits of a seed at which its brand suggestions count half (see `brand`).
BRAND_SHRINKAGE = 50.0
#: Items the learned source (`two_tower`) adds: enough to fill k = 100 after the rules, at ~0.1 ms of FAISS.
TWO_TOWER_CANDIDATES = 100


@dataclass(frozen=True, slots=True)
class Seed:
    item_id: str
    weight: float
    is_context: bool


def seeds_for(user: UserState | None, context_item_ids: Sequence[str]) -> list[Seed]:
    """The items recommendations grow from: the context items, then the user's latest distinct items."""
    seeds = [Seed(item, CONTEXT_SEED_WEIGHT, True) for item in context_item_ids]
    if user is None:
        return seeds
    seen = set(context_item_ids)
    weight = 1.0
    for _, etype, item in reversed(user.recent):
        if item in seen:
            continue
        seen.add(item)
        seeds.append(Seed(item, weight * SEED_TYPE_WEIGHT.get(etype, 0.5), False))
        weight *= SEED_RECENCY_DECAY
        if len(seeds) >= MAX_SEEDS + len(context_item_ids):
            break
    return seeds


def covisitation(
    seeds: Sequence[Seed], features: RequestFeatures, lists: TopLists, pool: Candidates, weight: float
) -> None:
    """Items other customers interacted with next to the seed items.

    A neighbour scores ``seed weight * count / total ** COVIS_SEED_EXPONENT / pop ** COVIS_POPULARITY_EXPONENT``
    per seed (``total``: the seed's co-visits over the neighbours read; ``pop``: the neighbour's popularity),
    summed over seeds, then divided by the best score of the request, not of each seed: a seed seen next to
    one other item once does not count as much as one with a hundred co-visits.
    """
    popularity = lists.popularity
    floor = COVIS_POPULARITY_FLOOR
    exponent = -COVIS_POPULARITY_EXPONENT
    scored: list[tuple[str, float, str]] = []
    best = 0.0
    for seed in seeds[:COVIS_SEEDS]:
        neighbours = features.covis.get(seed.item_id)
        if not neighbours:
            continue
        total = sum(count for _, count in neighbours)
        if total <= 0.0:
            continue
        seed_weight = seed.weight / total**COVIS_SEED_EXPONENT
        for item, count in neighbours:
            score = seed_weight * count * max(popularity.get(item, 0.0), floor) ** exponent
            scored.append((item, score, seed.item_id))
            best = max(best, score)
    if best <= 0.0:
        return
    scale = weight / best
    add = pool.add
    for item, score, seed_item in scored:
        add(item, score * scale, f"co_viewed_with:{seed_item}")


def content(seeds: Sequence[Seed], catalog: Catalog, lists: TopLists, pool: Candidates, weight: float) -> None:
    """Popular items of the seed items' own category, same brand first."""
    used = 0
    for seed in seeds:
        info = catalog.get(seed.item_id)
        if info is None or not info.categories:
            continue
        ranked = lists.popular_by_category.get(info.category) or []
        added = 0
        for rank, item in enumerate(ranked):
            if item == seed.item_id:
                continue
            other = catalog.items.get(item)
            if other is None:
                continue
            same_brand = bool(info.brand) and other.brand == info.brand
            score = weight * seed.weight / (1.0 + rank / 10.0) * (1.0 if same_brand else 0.5)
            reason = f"same_brand_as:{seed.item_id}" if same_brand else f"similar_to:{seed.item_id}"
            pool.add(item, score, reason)
            added += 1
            if added >= CONTENT_PER_SEED:
                break
        used += 1
        if used >= CONTENT_SEEDS:
            break


def brand(
    seeds: Sequence[Seed],
    catalog: Catalog,
    features: RequestFeatures,
    lists: TopLists,
    pool: Candidates,
    weight: float,
) -> None:
    """The best sellers of the seed items' brands: customers who buy a brand come back for more of it.

    A guess for seeds with little co-visitation evidence: each seed's share is multiplied by
    ``BRAND_SHRINKAGE / (BRAND_SHRINKAGE + its co-visit count)``, so it fades where what other customers did
    next is known (a shop whose sessions stay in one category) and leads where it is not (a long tail of rare
    items).
    """
    popularity = lists.popularity
    used = 0
    for seed in seeds:
        info = catalog.items.get(seed.item_id)
        if info is None or not info.brand:
            continue
        ranked = lists.popular_by_brand.get(info.brand)
        if ranked:
            covisits = sum(count for _, count in features.covis.get(seed.item_id, ()))
            best = popularity.get(ranked[0], 0.0) or 1.0
            reason = f"same_brand_as:{seed.item_id}"
            scale = weight * seed.weight * BRAND_SHRINKAGE / (BRAND_SHRINKAGE + covisits)
            for item in ranked[:BRAND_PER_SEED]:
                if item != seed.item_id:
                    share = (popularity.get(item, 0.0) / best) ** BRAND_POPULARITY_EXPONENT
                    pool.add(item, scale * share, reason)
        used += 1
        if used >= BRAND_SEEDS:
            break


def trending_in_categories(user: UserState | None, lists: TopLists, pool: Candidates, weight: float) -> None:
    """What is trending now in the categories the user cares most about (deepest levels first)."""
    if user is None or not user.category_affinity:
        return
    affinity = user.category_affinity
    # Prefer specific categories: rank by depth, then by affinity.
    top = sorted(affinity, key=lambda c: (-c.count("/"), -affinity[c], c))[:TRENDING_CATEGORIES]
    total = sum(affinity[c] for c in top) or 1.0
    for category in top:
        ranked = lists.trending_by_category.get(category)
        if not ranked:
            continue
        best = lists.trending.get(ranked[0], 0.0) or 1.0
        share = affinity[category] / total
        reason = f"trending_in:{category}"
        for item in ranked[:TRENDING_PER_CATEGORY]:
            pool.add(item, weight * share * lists.trending.get(item, 0.0) / best, reason)


def popular(lists: TopLists, pool: Candidates, weight: float, category_prefix: str, limit: int) -> None:
    """The shop's (or the requested category's) most popular items."""
    ranked = lists.popular_by_category.get(category_prefix, []) if category_prefix else lists.popular
    if not ranked:
        return
    best = lists.popularity.get(ranked[0], 0.0) or 1.0
    reason = f"popular_in:{category_prefix}" if category_prefix else "popular"
    for item in ranked[:limit]:
        pool.add(item, weight * lists.popularity.get(item, 0.0) / best, reason)


def two_tower(
    retriever: TwoTowerRetriever,
    user: UserState | None,
    context_item_ids: Sequence[str],
    exclude: Collection[str],
    pool: Candidates,
    weight: float,
    limit: int | None = None,
) -> None:
    """The learned "what next": the user tower over the user's latest interactions (and the page being
    viewed), then the ``limit`` (default `TWO_TOWER_CANDIDATES`) nearest items in the bundle's index, reason
    ``learned``.

    Scores are `TwoTowerRetriever.relative_scores`: each item's softmax probability relative to the best
    one's, so the best learned item scores ``weight`` and the others fall off as the model's confidence
    does. Nothing is added when no interaction is known to the bundle (a new user on no page).
    """
    if weight <= 0.0:
        return
    limit = TWO_TOWER_CANDIDATES if limit is None else limit
    vector = retriever.encode(user.recent if user is not None else (), context_item_ids)
    if vector is None:
        return
    add = pool.add
    for item, score in retriever.relative_scores(retriever.search(vector, limit, exclude)):
        add(item, weight * score, "learned")
