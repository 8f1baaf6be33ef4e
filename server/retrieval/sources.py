"""Real-time candidate sources. Each adds scored, explained items to a `Candidates` pool.

Scores of one source are normalised to [0, 1] per seed so the blend weights (`BlendWeights`) mean
the same thing for every user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feature_worker.catalog import Catalog
from feature_worker.fold import ADD_TO_CART, CLICK, PURCHASE, REMOVE_FROM_CART, VIEW
from feature_worker.state import UserState
from feature_worker.stores.base import RequestFeatures
from server.retrieval.candidates import Candidates
from server.retrieval.toplists import TopLists

#: How strongly a past interaction of each type seeds "more like this".
SEED_TYPE_WEIGHT: dict[int, float] = {VIEW: 1.0, CLICK: 1.2, ADD_TO_CART: 1.5, PURCHASE: 1.0, REMOVE_FROM_CART: 0.2}
#: Each older seed counts this much less than the one after it.
SEED_RECENCY_DECAY = 0.8
#: The page the user is on says more about intent right now than any past interaction.
CONTEXT_SEED_WEIGHT = 2.0
MAX_SEEDS = 10
#: Seeds whose category and brand neighbours are added (content source).
CONTENT_SEEDS = 3
CONTENT_PER_SEED = 20
TRENDING_CATEGORIES = 3
TRENDING_PER_CATEGORY = 30


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


def covisitation(seeds: Sequence[Seed], features: RequestFeatures, pool: Candidates, weight: float) -> None:
    """Items other customers interacted with next to the seed items."""
    for seed in seeds:
        neighbours = features.covis.get(seed.item_id)
        if not neighbours:
            continue
        top = neighbours[0][1]
        reason = f"co_viewed_with:{seed.item_id}"
        for item, count in neighbours:
            pool.add(item, weight * seed.weight * count / top, reason)


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
